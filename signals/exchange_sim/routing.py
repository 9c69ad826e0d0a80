"""What a handler gets and declares: one request's context and a route table entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from signals.exchange_sim.faults import FaultKind, FaultPlan
from signals.exchange_sim.numbers import dec
from signals.exchange_sim.params import Params


@dataclass
class Ctx:
    method: str
    path: str
    params: Params
    faults: FaultPlan

    def lost(self) -> bool:
        """Should this lookup pretend an existing order does not exist (LOST_THEN_FOUND)?"""
        return (
            self.faults.take(
                [FaultKind.LOST_THEN_FOUND], self.method, self.path, self.params.values
            )
            is not None
        )

    def partial(self) -> tuple[Decimal | None, Decimal | None] | None:
        """(fill_qty, fill_fraction) of a PARTIAL_THEN_EXPIRE scripted for this placement."""
        fault = self.faults.take(
            [FaultKind.PARTIAL_THEN_EXPIRE], self.method, self.path, self.params.values
        )
        if fault is None:
            return None
        fraction = fault.fill_fraction
        if fault.fill_qty is None and fraction is None:
            fraction = Decimal("0.5")
        return (
            dec(fault.fill_qty) if fault.fill_qty is not None else None,
            dec(fraction) if fraction is not None else None,
        )


Handler = Callable[[Ctx], Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    signed: bool = False
