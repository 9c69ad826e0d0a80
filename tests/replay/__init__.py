"""Replay of recorded workflow histories: a non-deterministic workflow change fails here."""
