#!/usr/bin/env python3
"""The container health check of the OCW image (``ocw-healthcheck [worker|listener|dashboard]``).

A role's check is one local HTTP request, standard library only:

- ``worker`` / ``listener``: the Prometheus endpoint (``OCW_WORKER_METRICS`` /
  ``OCW_LISTENER_METRICS``) answers and shows ``temporal_worker_start_total``, i.e. the
  process's Temporal worker has started (its runtime is up and it reached the server);
- ``dashboard``: ``ocw dashboard`` answers ``/openapi.json``.

Without a role it is read from PID 1's command line (``ocw worker`` ...). A role without an
endpoint configured (no metrics address) and any other command (``ocw setup``) pass: there is
nothing cheap to ask.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

TIMEOUT_S = 4.0
METRICS_ENV = {"worker": "OCW_WORKER_METRICS", "listener": "OCW_LISTENER_METRICS"}
STARTED = b"temporal_worker_start_total"


def role_of_pid1() -> str | None:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    for word in words:
        if word in ("worker", "dashboard"):
            return word
        if word == "listen":
            return "listener"
    return None


def local_url(address: str, path: str) -> str:
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}{path}"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 - local only
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        return resp.read()


def check(role: str | None) -> tuple[bool, str]:
    if role in METRICS_ENV:
        address = os.environ.get(METRICS_ENV[role], "").strip()
        if not address:
            return True, f"{role}: {METRICS_ENV[role]} unset, nothing to check"
        url = local_url(address, "/metrics")
        try:
            body = fetch(url)
        except OSError as err:
            return False, f"{role}: {url} does not answer ({err})"
        if STARTED not in body:
            return False, f"{role}: {url} answers but its Temporal worker has not started"
        return True, f"{role}: ok"
    if role == "dashboard":
        port = os.environ.get("OCW_DASHBOARD_PORT", "8765")
        url = local_url(f"127.0.0.1:{port}", "/openapi.json")
        try:
            fetch(url)
        except OSError as err:
            return False, f"dashboard: {url} does not answer ({err})"
        return True, "dashboard: ok"
    return True, f"{role or 'this command'}: no health check"


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else role_of_pid1()
    ok, text = check(role)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
