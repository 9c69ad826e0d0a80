"""Fault injection at the activity seam: the real trading activities with faults a test
switches on, and an agent layer that hangs. Kept apart from ``fakes.py``, whose SignalSink
workflow the sandbox re-imports and which must stay free of activity imports."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.trading import TradingActivities
from trading.models import DecisionRecord, Fill, OrderRequest, OrderStatus, Side
from trading.state import (
    EvaluateRequest,
    JournalIncident,
    JournalTrade,
    PositionVerdict,
)
from workflows import activity_api as api


class FaultyTrading(TradingActivities):
    """The real trading activities with faults switched on by a test.

    ``fail_buys``: symbols whose BUY raises a final (non-retryable) order error, nothing placed;
    ``reject_sells``: how many SELLs the broker rejects before it fills one (a REJECTED fill);
    ``journal_down``: every journal write fails (retryable), as when the disk is full;
    ``hang_evaluate``: the position scorer blocks until the event is set (a slow agent layer).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_buys: set[str] = set()
        self.reject_sells = 0
        self.fail_sells = 0  # SELLs that end in a final error before one fills
        self.partial_sells = 0  # SELLs that fill only half (an IOC order's rest expired)
        self.rejected: list[str] = []
        self.journal_down = False
        self.journal_attempts = 0

    @activity.defn(name=api.PLACE_ORDER)
    async def place_order(self, req: OrderRequest) -> Fill:
        if req.side == Side.BUY and req.symbol in self.fail_buys:
            raise ApplicationError(
                f"exchange refused {req.symbol}: filter failure",
                type="InvalidOrder",
                non_retryable=True,
            )
        if req.side == Side.SELL and self.fail_sells > 0:
            self.fail_sells -= 1
            raise ApplicationError(
                "exchange: reduce-only order rejected (test)",
                type="InvalidOrder",
                non_retryable=True,
            )
        if req.side == Side.SELL and self.partial_sells > 0:
            self.partial_sells -= 1
            half = req.model_copy(update={"qty": req.qty / 2})
            fill = await super().place_order(half)
            return fill.model_copy(
                update={"status": OrderStatus.PARTIALLY_FILLED, "requested_qty": req.qty}
            )
        if req.side == Side.SELL and self.reject_sells > 0:
            self.reject_sells -= 1
            self.rejected.append(req.client_order_id)
            return Fill(
                client_order_id=req.client_order_id,
                position_id=req.position_id,
                symbol=req.symbol,
                side=req.side,
                status=OrderStatus.REJECTED,
                qty=0.0,
                price=0.0,
                fee=0.0,
                market_time_ms=req.market_time_ms,
                reason="insufficient balance (test)",
            )
        return await super().place_order(req)

    def _journal_check(self) -> None:
        self.journal_attempts += 1
        if self.journal_down:
            raise RuntimeError("journal disk full (test)")

    @activity.defn(name=api.JOURNAL_DECISION)
    async def journal_decision(self, rec: DecisionRecord) -> bool:
        self._journal_check()
        return await super().journal_decision(rec)

    @activity.defn(name=api.JOURNAL_TRADE)
    async def journal_trade(self, rec: JournalTrade) -> bool:
        self._journal_check()
        return await super().journal_trade(rec)

    @activity.defn(name=api.JOURNAL_INCIDENT)
    async def journal_incident(self, rec: JournalIncident) -> bool:
        self._journal_check()
        return await super().journal_incident(rec)


class SlowEvaluate:
    """An agent layer that hangs (an LLM position check that takes minutes)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    @activity.defn(name=api.EVALUATE_POSITION)
    async def evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        self.started += 1
        await self.release.wait()
        return PositionVerdict(verdict="HOLD", score=0.0)
