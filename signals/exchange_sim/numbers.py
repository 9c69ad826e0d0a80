"""Decimal arithmetic for prices, quantities and balances.

Binance checks filters exactly (``quantity % stepSize == 0``), which binary floats cannot do, so
every amount inside the sim is a ``Decimal``; only the price source speaks float.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal

ZERO = Decimal(0)
ONE = Decimal(1)
QUOTE_PLACES = 8  # balances, costs and fees are kept to 8 decimals, as Binance shows them

# What Binance accepts in a DECIMAL parameter (its -1100 message quotes this range).
NUMBER_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_NUMBER = re.compile(NUMBER_RANGE)


def is_number(text: str) -> bool:
    return bool(_NUMBER.match(text))


def dec(value: float | int | str | Decimal) -> Decimal:
    """A Decimal from a float as it prints (``0.1`` -> ``Decimal('0.1')``), not its binary value."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def places_of(step: Decimal) -> int:
    """Decimal places a step or tick implies: ``0.010`` -> 2, ``1`` -> 0."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_UP) * step


def is_multiple(value: Decimal, step: Decimal, base: Decimal = ZERO) -> bool:
    return step <= 0 or (value - base) % step == 0


def money(value: Decimal) -> Decimal:
    """Round a cost, fee or balance to the 8 places the account shows."""
    return value.quantize(Decimal(1).scaleb(-QUOTE_PLACES), rounding=ROUND_HALF_UP)


def fmt(value: Decimal | None, places: int = QUOTE_PLACES) -> str:
    """Fixed-point text as Binance writes numbers (``"0.00100000"``), never exponent notation."""
    if value is None:
        value = ZERO
    quantum = Decimal(1).scaleb(-places) if places > 0 else ONE
    return f"{value.quantize(quantum, rounding=ROUND_HALF_UP):f}"
