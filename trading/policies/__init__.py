"""Systematic policy families beside the rule policy, each usable by the backtester.

Every family is a pure target-weight function over one symbol's bars (``base``), wrapped as
a ``DecisionSource`` by ``FamilyDecisions``:

* ``tsmom``: time-series momentum with volatility targeting (12 default sets);
* ``trend_filter``: close against the N-day SMA (8 sets);
* ``breakout``: Donchian channel breakout with an ATR trailing exit (8 sets);
* ``carry``: funding-rate carry and crowding on perpetuals (12 sets);
* ``trend_tsmom`` (``combo``): TSMOM gated by the trend filter (12 sets).
"""

from trading.policies import breakout, carry, combo, trend_filter, tsmom
from trading.policies.base import (
    BarSeries,
    Family,
    FamilyDecisions,
    WeightDecisions,
    families,
    get_family,
)

__all__ = [
    "BarSeries",
    "Family",
    "FamilyDecisions",
    "WeightDecisions",
    "breakout",
    "carry",
    "combo",
    "families",
    "get_family",
    "trend_filter",
    "tsmom",
]
