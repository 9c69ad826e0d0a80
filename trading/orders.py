"""Deterministic, exchange-valid client order ids (SPEC §9).

The id comes from the position id and an order sequence number kept in workflow state, so a
retried activity or a replayed workflow asks for the very same order. Binance accepts at most
36 characters from ``[A-Za-z0-9._:/-]``. Pure stdlib: workflow code calls it.
"""

from __future__ import annotations

import hashlib
import re

MAX_LEN = 36
_INVALID = re.compile(r"[^A-Za-z0-9._:/-]")
_VALID = re.compile(r"^[A-Za-z0-9._:/-]{1,36}$")


def is_valid_client_order_id(value: str) -> bool:
    return bool(_VALID.match(value))


def client_order_id(position_id: str, seq: int) -> str:
    """``<position id>-<seq>``; a too-long position id keeps a prefix plus a stable hash."""
    if seq < 1:
        raise ValueError(f"order sequence must be >= 1, got {seq}")
    pid = _INVALID.sub("-", position_id) or "p"
    suffix = f"-{seq}"
    if len(pid) + len(suffix) <= MAX_LEN:
        return pid + suffix
    digest = hashlib.blake2b(position_id.encode(), digest_size=5).hexdigest()  # 10 chars
    keep = MAX_LEN - len(suffix) - len(digest) - 1
    if keep < 1:
        raise ValueError(f"order sequence {seq} too large for a client order id")
    return f"{pid[:keep]}.{digest}{suffix}"
