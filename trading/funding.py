"""Funding of USDⓈ-M perpetuals by the position's side (SPEC §10: funding for perpetuals).

Binance's convention: at each funding time (every 8 h on most symbols) the exchange moves
``funding payment = position notional × funding rate`` between the two sides, where the notional
is the position's size × the mark price and the rate is per funding period (0.0001 = 0.01 %).
A positive rate means longs pay shorts; a negative rate means shorts pay longs. The exchange
only moves the cash between traders (no fee of its own), and the futures account's income
history shows it as ``FUNDING_FEE`` (``trading.models.IncomeEntry``: negative when paid).

Cash flow to the account, for notional N >= 0 and rate r:

============  ===========  ===========
side          r > 0        r < 0
============  ===========  ===========
long          pays N·r     receives N·|r|
short         receives N·r pays N·|r|
============  ===========  ===========

i.e. ``-N·r`` for a long and ``+N·r`` for a short. Pure and deterministic (workflow code may
import it): standard library and ``trading.models`` only.
"""

from __future__ import annotations

import math

from trading.models import PositionSide


def funding_payment(side: PositionSide, notional: float, rate: float) -> float:
    """Cash to the account at one funding time (negative = paid). ``notional`` is the size ×
    mark price; its sign is ignored (the side carries the direction, quantities stay >= 0), so
    a caller that signs short quantities still gets the right flow. Raises ValueError on a
    non-finite input: a NaN would otherwise creep into cash unseen."""
    if not math.isfinite(notional) or not math.isfinite(rate):
        raise ValueError(f"funding needs finite numbers, got notional={notional!r} rate={rate!r}")
    flow = abs(notional) * rate
    return -flow if PositionSide(side) is PositionSide.LONG else flow


def funding_paid(side: PositionSide, notional: float, rate: float) -> float:
    """What the position pays (negative = received): the backtester's ``funding_paid`` sign,
    which for a long is ``notional × rate`` as it books it today."""
    return -funding_payment(side, notional, rate)
