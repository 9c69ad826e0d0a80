"""Request parameters read the way Binance reads them.

Binance takes parameters from the query string and the form body alike (the query string wins
when both carry one) and answers a missing, empty or malformed one with its own error codes.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl

from signals.exchange_sim.errors import illegal, invalid_value, mandatory
from signals.exchange_sim.numbers import NUMBER_RANGE, is_number

INT_RANGE = r"^[0-9]{1,20}$"


def parse_params(raw_query: str, body: str) -> dict[str, str]:
    """Body parameters, then query parameters over them, signature excluded."""
    params = dict(parse_qsl(body, keep_blank_values=True))
    params.update(parse_qsl(raw_query, keep_blank_values=True))
    params.pop("signature", None)
    return params


class Params:
    """Typed, validating access to one request's parameters."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def opt(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value not in (None, "") else None

    def req(self, name: str) -> str:
        value = self.opt(name)
        if value is None:
            raise mandatory(name)
        return value

    def dec(self, name: str, required: bool = False) -> Decimal | None:
        text = self.req(name) if required else self.opt(name)
        if text is None:
            return None
        if not is_number(text):
            raise illegal(name, NUMBER_RANGE)
        return Decimal(text)

    def int(self, name: str, default: int | None = None) -> int | None:
        text = self.opt(name)
        if text is None:
            return default
        if not text.isdigit() or len(text) > 20:
            raise illegal(name, INT_RANGE)
        return int(text)

    def bool(self, name: str) -> bool:
        """``"true"`` / ``"false"`` (any case); Binance refuses anything else."""
        text = self.opt(name)
        if text is None:
            return False
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise invalid_value(name)
        return lowered == "true"

    def has(self, name: str) -> bool:
        return self.opt(name) is not None
