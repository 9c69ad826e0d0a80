"""The family decider: a policy family's decision for a live account (issue 15).

Called from the ``decide`` activity (``activities/trading.py``) when the account's policy is a
family: it reads the listener's daily bars from the bars board (``activities/bars_board.py``),
keeps those closed at the decision's market time, and lets ``trading/policies/live.py`` turn
the family's target weights into BUY / SELL (SHORT / COVER with shorts on) / HOLD.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from activities.bars_board import BarsBoard, BarsReader, sheet_name, stale_reason
from trading.config import Settings
from trading.models import AgentDecision, PositionSide
from trading.policies.base import BarSeries
from trading.policies.live import PolicySpec, family_decision, parse_policy, series_from_rows
from trading.state import DecideRequest

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def policy_spec(text: str) -> PolicySpec:
    return parse_policy(text)


class FamilyDecider:
    def __init__(self, reader: BarsReader) -> None:
        self.reader = reader

    @classmethod
    def from_settings(cls, settings: Settings) -> FamilyDecider:
        board = BarsBoard.from_settings(settings)
        return cls(BarsReader(board, settings.market_task_queue))

    async def decide(self, req: DecideRequest, spec: PolicySpec) -> AgentDecision:
        as_of = req.market.as_of_ms
        sheet = await self.reader.sheet(as_of)
        symbols = list(req.market.symbols) or []
        derivatives = (req.context.derivatives or {}) if req.context else {}
        bars: dict[str, BarSeries | None] = {}
        stale: dict[str, str] = {}
        need = spec.funding_prints()
        for symbol in symbols:
            why = stale_reason(sheet, symbol, as_of)
            if why is not None or sheet is None:
                stale[symbol] = why or "no bars"
                bars[symbol] = None
                continue
            funding = derivatives.get(symbol)
            rate = getattr(funding, "funding_rate", None) if funding is not None else None
            prints = [p for p in sheet.funding.get(symbol, []) if p[0] <= as_of]
            have = len(prints) if prints else (1 if rate is not None else 0)
            if have < need:  # a carry without its prints holds: it never sells on a gap
                stale[symbol] = f"{have} of {need} funding prints on the board"
                bars[symbol] = None
                continue
            bars[symbol] = await asyncio.to_thread(
                series_from_rows, sheet.bars.get(symbol, []), as_of, rate, prints
            )
        positions = req.account_view.positions
        return family_decision(
            spec,
            symbols,
            bars,
            held={p.symbol for p in positions},
            short_held={p.symbol for p in positions if p.side is PositionSide.SHORT},
            position_pct=req.default_position_pct,
            max_position_pct=req.max_position_pct,
            shorts=req.shorts,
            stale=stale,
        )

    def close(self) -> None:
        self.reader.close()


__all__ = ["FamilyDecider", "policy_spec", "sheet_name"]
