"""Delivers wake reasons to the account's running DecisionWorkflow.

Reasons are queued as the gate produces them; the dispatcher waits ``batch_window_s`` after the
first (live: 2 s, a candle close arrives symbol by symbol) and sends everything queued then as
one Wake (four symbols closing the same candle become one decision cycle, not four).

The listener never creates an account: it signals the workflow that the trading side started
(``ocw worker`` / ``ocw account init``). If Temporal is unreachable, or no run of the account is
open, the reasons stay queued (newer ones folded in) and go out with the next successful send,
none dropped; a missing account is said loudly (log and ``account_missing`` in the status).

``before_send`` (the listener's decision board, activities/decision_board.py) runs just before
each attempt with the wake about to go out; it is bounded by its owner and must not raise.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from trading.models import Wake

log = logging.getLogger(__name__)

MAX_DELAY_S = 15.0


@dataclass(frozen=True)
class PendingReason:
    reason: str
    symbol: str
    market_time_ms: int


def account_missing(err: BaseException) -> bool:
    """Temporal's answer when the workflow id has no open run (never started, or closed)."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND


class WakeDispatcher:
    def __init__(
        self,
        client: Client,
        workflow_id: str,
        on_sent: Callable[[Wake], None] | None = None,
        batch_window_s: float = 0.0,
        before_send: Callable[[Wake], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.on_sent = on_sent
        self.before_send = before_send
        self.batch_window_s = batch_window_s
        self.queue: asyncio.Queue[PendingReason] = asyncio.Queue()
        self.sent = 0
        self.failures = 0
        self.account_missing = False  # the last attempt found no open run of the account
        self.held = 0  # reasons waiting for a run to deliver them to
        self._sending = False

    def push(self, reason: str, symbol: str, market_time_ms: int) -> None:
        self.queue.put_nowait(PendingReason(reason, symbol, market_time_ms))

    def idle(self) -> bool:
        return self.queue.empty() and not self._sending

    async def run(self) -> None:
        while True:
            first = await self.queue.get()
            self._sending = True  # from here on, not idle: the reason is on its way
            try:
                if self.batch_window_s > 0:
                    # Live fix (issue 3, first `ocw listen` against a live-paced feed): each
                    # symbol's close frame arrives on its own, so without this wait one candle
                    # close became one wake (and decision cycle) per symbol. Gather briefly.
                    await asyncio.sleep(self.batch_window_s)
                batch = [first]
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                await self._send_until_done(batch)
            finally:
                self._sending = False

    async def _send_until_done(self, batch: list[PendingReason]) -> None:
        delay = 0.5
        while True:
            wake = self._wake(batch)
            if self.before_send is not None:
                try:
                    await self.before_send(wake)
                except Exception as err:  # noqa: BLE001 - the wake goes out regardless
                    log.warning("before the wake: %s", err)
            try:
                await self.client.get_workflow_handle(self.workflow_id).signal("wake", wake)
            except Exception as err:  # noqa: BLE001 - keep the reasons and retry
                self.failures += 1
                self.held = len(batch)
                if account_missing(err):
                    if not self.account_missing:
                        log.error(
                            "no running DecisionWorkflow %s: %d wake reason(s) held until the "
                            "trading side starts the account (`ocw worker` or `ocw account "
                            "init`); the listener never creates one",
                            self.workflow_id,
                            len(batch),
                        )
                    self.account_missing = True
                else:
                    log.warning("wake not delivered (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                while not self.queue.empty():  # fold in what arrived meanwhile
                    batch.append(self.queue.get_nowait())
                continue
            if self.account_missing:
                log.info("DecisionWorkflow %s found: held reasons delivered", self.workflow_id)
            self.account_missing = False
            self.held = 0
            self.sent += 1
            if self.on_sent:
                self.on_sent(wake)
            return

    @staticmethod
    def _wake(batch: list[PendingReason]) -> Wake:
        reasons = list(dict.fromkeys(p.reason for p in batch))
        symbols = list(dict.fromkeys(p.symbol for p in batch))
        market_time = max(p.market_time_ms for p in batch)
        key = f"{market_time}|{'|'.join(sorted(reasons))}"
        wake_id = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        return Wake(
            reason=reasons[0],
            reasons=reasons[1:],
            symbols=symbols,
            market_time_ms=market_time,
            wake_id=wake_id,
        )
