"""Binance's error answers: an HTTP status plus ``{"code": <negative int>, "msg": <text>}``.

Codes and messages are the ones Binance documents (spot and USDⓈ-M futures error-code pages), so
ccxt maps them to the same exception classes it would raise against the real exchange.
"""

from __future__ import annotations

from aiohttp import web


class BinanceError(Exception):
    """An error answer; raising it anywhere in a handler turns into exactly this response."""

    def __init__(
        self, code: int, msg: str, status: int = 400, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.retry_after = retry_after

    def response(self) -> web.Response:
        response = web.json_response({"code": self.code, "msg": self.msg}, status=self.status)
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        return response


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def illegal(name: str, legal: str) -> BinanceError:
    return BinanceError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


def not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.")


def invalid_value(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def bad_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def bad_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def bad_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def bad_tif() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def no_such_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def unknown_order() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def filter_failure(name: str) -> BinanceError:
    return BinanceError(-1013, f"Filter failure: {name}")


def insufficient_balance() -> BinanceError:
    return BinanceError(-2010, "Account has insufficient balance for requested action.")


def insufficient_margin() -> BinanceError:
    return BinanceError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> BinanceError:
    return BinanceError(-2022, "ReduceOnly Order is rejected.")


def market_closed() -> BinanceError:
    """No price yet for the symbol: nothing can match, as on a symbol outside TRADING."""
    return BinanceError(-1013, "Market is closed.")
