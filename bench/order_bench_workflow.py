"""The bench workflow of ``bench/execution.py``: N ``place_order`` activities in sequence, as the
workflows call them, each timed inside the workflow with ``workflow.time()``.

The difference between the time before ``execute_activity`` and the time after is what the
DecisionWorkflow sees of an order: decision → confirmed fill, through the Temporal server
(scheduling, the worker's poll, the activity with its lookups, the completion, the next
workflow task). Kept in its own module so the worker's sandbox can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from trading.models import Fill, OrderRequest, OrderStatus, Side
    from trading.orders import client_order_id
    from workflows import activity_api as api


@dataclass
class OrderBenchInput:
    position_id: str  # client order ids are client_order_id(position_id, 1..n)
    n: int
    symbol: str
    qty: float
    ref_price: float
    trading_task_queue: str
    market_time_ms: int = 1_700_000_000_000


@workflow.defn(name="OrderBenchWorkflow")
class OrderBenchWorkflow:
    @workflow.run
    async def run(self, inp: OrderBenchInput) -> list[float]:
        """Milliseconds of each order, decision to confirmed fill, in order."""
        durations: list[float] = []
        for seq in range(1, inp.n + 1):
            order = OrderRequest(
                client_order_id=client_order_id(inp.position_id, seq),
                position_id=inp.position_id,
                seq=seq,
                symbol=inp.symbol,
                side=Side.BUY if seq % 2 == 1 else Side.SELL,
                qty=inp.qty,
                ref_price=inp.ref_price,
                market_time_ms=inp.market_time_ms,
                reason="bench",
            )
            start = workflow.time()
            fill = await workflow.execute_activity(
                api.PLACE_ORDER,
                order,
                task_queue=inp.trading_task_queue,
                result_type=Fill,
                **api.ORDER_CALL.kwargs(),
            )
            durations.append((workflow.time() - start) * 1000)
            if fill.status != OrderStatus.FILLED or fill.qty != inp.qty:
                raise ApplicationError(f"{order.client_order_id} not filled as expected: {fill}")
        return durations
