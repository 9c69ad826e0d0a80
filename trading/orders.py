"""Deterministic, exchange-valid client order ids (SPEC §9).

The id comes from the position id and an order sequence number kept in workflow state, so a
retried activity or a replayed workflow asks for the very same order. Binance spot accepts at
most 36 characters from ``[A-Za-z0-9_-]`` (its -1100 message; futures also take ``.:/``), so
ids keep to that set, valid on both. Pure stdlib: workflow code calls it.
"""

from __future__ import annotations

import hashlib
import re

CLIENT_ORDER_ID_MAX = 36
_HASH_BYTES = 6
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def client_order_id(position_id: str, seq: int) -> str:
    """Deterministic Binance-valid order id for the ``seq``-th order of a position.

    The id is ``f"{pid}-{seq}"`` where ``pid`` is ``position_id`` as is, when that is valid
    (only ``[A-Za-z0-9_-]``) and short enough (36 characters in all). Otherwise ``pid``
    becomes ``f"{prefix}_{hash}"``: the sanitized id (invalid characters replaced by ``-``)
    cut to fit, then 12 hex characters of blake2b over the *original* position id. The hash
    keeps distinct position ids distinct even when they share a long prefix or differ only in
    characters that sanitizing merges. Being a pure function of (position_id, seq), a retried
    activity recomputes the same id and the broker recognises the order.
    """
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    suffix = f"-{seq}"
    sanitized = _INVALID_CHAR.sub("-", position_id)
    plain = f"{sanitized}{suffix}"
    if sanitized == position_id and position_id and len(plain) <= CLIENT_ORDER_ID_MAX:
        return plain
    digest = hashlib.blake2b(position_id.encode("utf-8"), digest_size=_HASH_BYTES).hexdigest()
    room = CLIENT_ORDER_ID_MAX - len(suffix) - len(digest) - 1
    if room < 0:
        raise ValueError(f"seq {seq} too large for a {CLIENT_ORDER_ID_MAX}-char order id")
    return f"{sanitized[:room]}_{digest}{suffix}"
