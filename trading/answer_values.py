"""Values in an agent's answer: numbers and tickers as a model may write them.

Shared by the contract's validation (``trading/agent_contract.py``) and the exit plans'
(``trading/exit_plan.py``), which the PositionWorkflow runs: standard library only.
"""

from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> float | None:
    """A finite float from a JSON number (or numeric string); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def normalize_ticker(raw: Any, universe: list[str]) -> str | None:
    """``BTC/USDT``, ``btc/usdt``, ``BTCUSDT`` or ``BTC`` → the universe symbol; else None."""
    if not isinstance(raw, str):
        return None
    key = raw.strip().upper()
    for symbol in universe:
        base, _, quote = symbol.upper().partition("/")
        if key in (symbol.upper(), base + quote, base):
            return symbol
    return None
