"""Scripted failures, per path and count, of the kinds a real Binance client must survive.

The ones that matter most for exactly-once come *after* the exchange accepted and recorded the
order: the client sees an error or nothing, yet the fill is in the ledger, and only a lookup
by client order id tells the truth.

| kind | when | the client gets | ccxt 4.5 raises |
|---|---|---|---|
| ``ERROR_AFTER`` | after the handler succeeded | HTTP 5xx (default 503, an HTML gateway page) | ExchangeNotAvailable |
| ``UNKNOWN_AFTER`` | after the handler succeeded | HTTP 408, -1007 "Timeout waiting for response from backend server. Send status unknown; execution status unknown." | RequestTimeout |
| ``DELAY_AFTER`` | after the handler succeeded | the real answer ``delay_s`` late | RequestTimeout (past its ``timeout``) |
| ``ERROR_BEFORE`` | before the handler | HTTP 5xx (default 502), nothing executed | ExchangeNotAvailable |
| ``RATE_LIMIT`` | before the handler | HTTP 429, -1003, ``Retry-After`` | DDoSProtection |
| ``BAN`` | before the handler | HTTP 418, -1003, ``Retry-After``; the pool stays banned that long | DDoSProtection |
| ``PARTIAL_THEN_EXPIRE`` | placing an order | ``fill_qty`` (or ``fill_fraction``) fills, the rest EXPIRED | nothing: status ``expired`` |
| ``LOST_THEN_FOUND`` | looking an order up | -2013 "Order does not exist." although it exists | OrderNotFound |

Only a successful answer is replaced by an AFTER fault (a refusal stays a refusal), and a
PARTIAL_THEN_EXPIRE is used up only by an order that passed every check.
``path`` matches by prefix (None: any), ``method`` exactly (None: any), ``client_order_id`` any
of ``newClientOrderId`` / ``origClientOrderId`` / ``clientAlgoId`` (None: any). A fault fires
``count`` times; each firing is counted in ``hits``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

CLIENT_ID_PARAMS = ("newClientOrderId", "origClientOrderId", "clientAlgoId")
GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} Service Temporarily Unavailable</title></head>\r\n"
    "<body>\r\n<center><h1>{status} Service Temporarily Unavailable</h1></center>\r\n"
    "</body>\r\n</html>\r\n"
)
UNKNOWN_STATUS_MSG = (
    "Timeout waiting for response from backend server. Send status unknown; "
    "execution status unknown."
)


class FaultKind(StrEnum):
    ERROR_AFTER = "error_after"
    UNKNOWN_AFTER = "unknown_after"
    DELAY_AFTER = "delay_after"
    ERROR_BEFORE = "error_before"
    RATE_LIMIT = "rate_limit"
    BAN = "ban"
    PARTIAL_THEN_EXPIRE = "partial_then_expire"
    LOST_THEN_FOUND = "lost_then_found"


BEFORE = (FaultKind.ERROR_BEFORE, FaultKind.RATE_LIMIT, FaultKind.BAN)
AFTER = (FaultKind.ERROR_AFTER, FaultKind.UNKNOWN_AFTER, FaultKind.DELAY_AFTER)


@dataclass
class Fault:
    kind: FaultKind
    path: str | None = None
    method: str | None = None
    count: int = 1
    client_order_id: str | None = None
    status: int | None = None  # HTTP status for the error kinds
    retry_after: int = 1  # seconds, RATE_LIMIT and BAN
    delay_s: float = 0.0  # DELAY_AFTER
    fill_qty: Decimal | None = None  # PARTIAL_THEN_EXPIRE
    fill_fraction: Decimal | None = None  # PARTIAL_THEN_EXPIRE, when fill_qty is None
    body: str | None = None  # replaces the default body of ERROR_* kinds
    hits: int = 0

    @property
    def active(self) -> bool:
        return self.hits < self.count

    def matches(self, method: str, path: str, params: Mapping[str, str]) -> bool:
        if not self.active:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is not None and not path.startswith(self.path):
            return False
        if self.client_order_id is not None:
            ids = {params.get(name) for name in CLIENT_ID_PARAMS}
            if self.client_order_id not in ids:
                return False
        return True


class FaultPlan:
    """The scripted faults, first added fires first."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def peek(
        self, kinds: Iterable[FaultKind], method: str, path: str, params: Mapping[str, str]
    ) -> Fault | None:
        wanted = set(kinds)
        for fault in self.faults:
            if fault.kind in wanted and fault.matches(method, path, params):
                return fault
        return None

    def take(
        self, kinds: Iterable[FaultKind], method: str, path: str, params: Mapping[str, str]
    ) -> Fault | None:
        fault = self.peek(kinds, method, path, params)
        if fault is not None:
            fault.hits += 1
        return fault
