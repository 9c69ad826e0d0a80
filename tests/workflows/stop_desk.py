"""An exchange's stop book for workflow tests: stops that trigger on the scripted price path.

A stop placed at time t triggers at the first scripted step after t whose price is at or below
it, whether or not any safety tick saw that price: exactly what the exchange does while the
engine looks away. Reads and cancels answer as ``ExchangeBroker`` does (a cancel after the
trigger says FILLED, with the fill). ``fail_places`` makes the first placements fail for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import activity

from tests.workflows.fakes import PriceScript, now_ms
from trading.models import (
    Fill,
    OrderStatus,
    Side,
    StopRef,
    StopRequest,
    StopState,
    StopStatus,
)
from workflows import activity_api as api


@dataclass
class _Stop:
    req: StopRequest
    placed_ms: int
    status: StopStatus = StopStatus.WORKING
    fill: Fill | None = None


@dataclass
class StopDesk:
    script: PriceScript
    fee_rate: float = 0.001
    fail_places: int = 0
    stops: dict[str, _Stop] = field(default_factory=dict)
    calls: list[tuple[str, str, float]] = field(default_factory=list)  # (what, coid, price)

    def activities(self) -> list:
        return [self.place_stop, self.stop_status, self.cancel_stop]

    def _advance(self, stop: _Stop, t_ms: int) -> None:
        """Trigger ``stop`` if the price path crossed it between its placing and ``t_ms``."""
        if stop.status != StopStatus.WORKING or self.script.t0_ms is None:
            return
        t0 = self.script.t0_ms
        for at, price in self.script.steps:
            step_ms = t0 + int(at * 1000)
            if stop.placed_ms < step_ms <= t_ms and price <= stop.req.stop_price:
                stop.status = StopStatus.FILLED
                stop.fill = Fill(
                    client_order_id=stop.req.client_order_id,
                    position_id=stop.req.position_id,
                    symbol=stop.req.symbol,
                    side=Side.SELL,
                    status=OrderStatus.FILLED,
                    qty=stop.req.qty,
                    price=price,
                    fee=stop.req.qty * price * self.fee_rate,
                    market_time_ms=step_ms,
                    reason="exchange_stop",
                )
                return

    def _state(self, stop: _Stop) -> StopState:
        return StopState(
            client_order_id=stop.req.client_order_id,
            symbol=stop.req.symbol,
            status=stop.status,
            stop_price=stop.req.stop_price,
            qty=stop.req.qty,
            fill=stop.fill,
        )

    @activity.defn(name=api.PLACE_STOP)
    async def place_stop(self, req: StopRequest) -> StopState:
        self.calls.append(("place", req.client_order_id, req.stop_price))
        if self.fail_places > 0:
            self.fail_places -= 1
            raise ValueError("exchange refused the stop (scripted)")
        stop = self.stops.setdefault(req.client_order_id, _Stop(req, now_ms()))
        return self._state(stop)

    @activity.defn(name=api.STOP_STATUS)
    async def stop_status(self, ref: StopRef) -> StopState:
        stop = self.stops[ref.client_order_id]
        self._advance(stop, now_ms())
        self.calls.append(("status", ref.client_order_id, ref.stop_price))
        return self._state(stop)

    @activity.defn(name=api.CANCEL_STOP)
    async def cancel_stop(self, ref: StopRef) -> StopState:
        stop = self.stops[ref.client_order_id]
        self._advance(stop, now_ms())
        self.calls.append(("cancel", ref.client_order_id, ref.stop_price))
        if stop.status == StopStatus.WORKING:
            stop.status = StopStatus.CANCELED
        return self._state(stop)

    def working(self) -> list[str]:
        return [c for c, s in self.stops.items() if s.status == StopStatus.WORKING]
