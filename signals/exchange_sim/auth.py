"""Signed-request checks exactly as Binance makes them (SIGNED = TRADE and USER_DATA endpoints).

The key travels in ``X-MBX-APIKEY``; ``signature`` is the hex HMAC-SHA256, keyed by the secret,
of *totalParams*: the raw query string followed directly by the raw form body (no separator),
both as sent on the wire and without the ``signature`` parameter itself. ``timestamp`` must lie
in ``[server - recvWindow, server + 1000)``; ``recvWindow`` defaults to 5000 and may not exceed
60000. Order of checks: key, mandatory parameters, recvWindow, signature, timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from signals.exchange_sim.errors import BinanceError, illegal, mandatory
from signals.exchange_sim.params import INT_RANGE

API_KEY_HEADER = "X-MBX-APIKEY"
KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{64}$")  # Binance HMAC keys are 64 alphanumerics
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
AHEAD_TOLERANCE_MS = 1000


def sign(secret: str, payload: str) -> str:
    """The signature a client computes; tests use it to build raw requests."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` without its ``signature=...`` part, and that signature (or None)."""
    if not raw:
        return "", None
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), signature


def authenticate(
    headers: Mapping[str, str],
    raw_query: str,
    body: str,
    params: Mapping[str, str],
    secrets: Mapping[str, str],
    now_ms: int,
) -> str:
    """Check one signed request; returns the API key, raises the error Binance would answer."""
    key = headers.get(API_KEY_HEADER, "")
    if not KEY_FORMAT.match(key):
        raise BinanceError(-2014, "API-key format invalid.", status=401)
    secret = secrets.get(key)
    if secret is None:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
    query_part, query_sig = split_signature(raw_query)
    body_part, body_sig = split_signature(body)
    signature = query_sig if query_sig is not None else body_sig
    if not signature:
        raise mandatory("signature")
    timestamp_text = params.get("timestamp") or ""
    if not timestamp_text:
        raise mandatory("timestamp")
    if not timestamp_text.isdigit():
        raise illegal("timestamp", INT_RANGE)
    recv_text = params.get("recvWindow") or str(DEFAULT_RECV_WINDOW)
    if not recv_text.isdigit():
        raise illegal("recvWindow", INT_RANGE)
    recv_window = int(recv_text)
    if recv_window > MAX_RECV_WINDOW or recv_window <= 0:
        raise BinanceError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW}.")
    expected = sign(secret, query_part + body_part)
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceError(-1022, "Signature for this request is not valid.")
    timestamp = int(timestamp_text)
    if timestamp >= now_ms + AHEAD_TOLERANCE_MS:
        raise BinanceError(
            -1021,
            f"Timestamp for this request was {AHEAD_TOLERANCE_MS}ms ahead of the server's time.",
        )
    if now_ms - timestamp > recv_window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
    return key
