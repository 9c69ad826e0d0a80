"""Binance kline stream frames: encode (for the replay server) and parse (for the listener).

The same code reads the real exchange and the local replay, so replay exercises the exact
parser used live. Parsing is the hot path (tens of thousands of frames a second): fields are
checked by hand after ``json.loads`` and the ``Bar`` is built with ``model_construct`` only
once every check has passed, which is equivalent to full validation but much cheaper.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, NamedTuple

from trading.config import INTERVAL_SECONDS
from trading.models import Bar

# longest first, so that "FDUSD" wins over "USD"-like suffixes and "USDT" over "BTC"-like ones
KNOWN_QUOTES: tuple[str, ...] = tuple(
    sorted(
        ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY"),
        key=len,
        reverse=True,
    )
)
_BAR_FIELDS = frozenset(Bar.model_fields)


class FrameError(ValueError):
    """A frame that cannot be turned into a bar; the message says why."""


class NotAKline(FrameError):
    """A well-formed frame that is not a kline (subscription ack, other event): ignore it."""


class KlineUpdate(NamedTuple):
    bar: Bar
    event_time_ms: int
    stream: str


# ---------------------------------------------------------------- names


def exchange_symbol(symbol: str) -> str:
    """``"BTC/USDT"`` -> ``"BTCUSDT"``."""
    return symbol.replace("/", "").upper()


@lru_cache(maxsize=4096)
def unified_symbol(exchange: str) -> str:
    """``"BTCUSDT"`` -> ``"BTC/USDT"``; the quote is found among the known quote assets."""
    text = exchange.upper()
    if "/" in text:
        return text
    for quote in KNOWN_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[: -len(quote)]}/{quote}"
    raise ValueError(
        f"cannot split {exchange!r} into base and quote (known quotes: {KNOWN_QUOTES})"
    )


def stream_name(symbol: str, interval: str) -> str:
    """``("BTC/USDT", "4h")`` -> ``"btcusdt@kline_4h"``."""
    return f"{exchange_symbol(symbol).lower()}@kline_{interval}"


def parse_stream_name(stream: str) -> tuple[str, str]:
    """``"btcusdt@kline_4h"`` -> ``("BTC/USDT", "4h")``; ValueError when it is not a kline stream."""
    name, sep, kind = stream.partition("@")
    if not sep or not kind.startswith("kline_") or not name:
        raise ValueError(f"{stream!r} is not a kline stream (expected like btcusdt@kline_1h)")
    interval = kind[len("kline_") :]
    if interval not in INTERVAL_SECONDS:
        raise ValueError(f"{stream!r}: unknown interval {interval!r}")
    return unified_symbol(name), interval


# ---------------------------------------------------------------- encode


def _trade_count(volume: float) -> int:
    """A plausible synthetic trade count: replayed data has no trade ids."""
    return 0 if volume <= 0 else 1 + min(int(volume), 10_000_000)


def encode_kline_event(bar: Bar, event_time_ms: int) -> str:
    """The raw (non-enveloped) kline event, as sent on ``/ws/<stream>``."""
    sym = exchange_symbol(bar.symbol)
    n = _trade_count(bar.volume)
    first = -1 if n == 0 else bar.open_time // 1000
    last = -1 if n == 0 else first + n - 1
    quote_volume = bar.volume * (bar.open + bar.high + bar.low + bar.close) / 4.0
    kline = {
        "t": bar.open_time,
        "T": bar.close_time,
        "s": sym,
        "i": bar.interval,
        "f": first,
        "L": last,
        "o": repr(bar.open),
        "c": repr(bar.close),
        "h": repr(bar.high),
        "l": repr(bar.low),
        "v": repr(bar.volume),
        "n": n,
        "x": bar.closed,
        "q": repr(quote_volume),
        "V": repr(bar.volume / 2.0),
        "Q": repr(quote_volume / 2.0),
        "B": "0",
    }
    event = {"e": "kline", "E": event_time_ms, "s": sym, "k": kline}
    return json.dumps(event, separators=(",", ":"))


def encode_kline_frame(bar: Bar, event_time_ms: int) -> str:
    """The combined-stream frame ``{"stream": ..., "data": <kline event>}``."""
    stream = stream_name(bar.symbol, bar.interval)
    return f'{{"stream":"{stream}","data":{encode_kline_event(bar, event_time_ms)}}}'


# ---------------------------------------------------------------- parse


def _number(k: dict[str, Any], key: str) -> float:
    try:
        raw = k[key]
    except KeyError:
        raise FrameError(f"kline field {key!r} missing") from None
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise FrameError(f"kline field {key!r} is not numeric: {raw!r}") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise FrameError(f"kline field {key!r} is not numeric: {raw!r}")
    if not math.isfinite(value):
        raise FrameError(f"kline field {key!r} is not finite: {raw!r}")
    return value


def _integer(obj: dict[str, Any], key: str, where: str) -> int:
    try:
        value = obj[key]
    except KeyError:
        raise FrameError(f"{where} field {key!r} missing") from None
    if type(value) is not int:
        raise FrameError(f"{where} field {key!r} must be an integer, got {value!r}")
    return value


def parse_kline_frame(raw: str | bytes) -> KlineUpdate:
    """Turn one combined-stream or raw kline frame into a checked ``Bar``.

    Raises ``NotAKline`` for well-formed frames of another kind (subscription acks, other
    events) and ``FrameError`` for anything malformed or implausible.
    """
    try:
        obj = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    if type(obj) is not dict:
        raise FrameError(f"frame is not a JSON object but {type(obj).__name__}")
    stream = obj.get("stream")
    if stream is not None:
        event = obj.get("data")
        if type(event) is not dict:
            raise FrameError("combined frame has no object 'data'")
        if type(stream) is not str:
            raise FrameError(f"'stream' must be a string, got {stream!r}")
    else:
        event = obj
    kind = event.get("e")
    if kind != "kline":
        if kind is None and ("result" in obj and "id" in obj):
            raise NotAKline(f"subscription reply (id={obj.get('id')!r})")
        if isinstance(kind, str):
            raise NotAKline(f"event type {kind!r} is not 'kline'")
        if kind is None:
            raise FrameError(f"not a kline event: no 'e' field (keys {sorted(event)[:8]})")
        raise FrameError(f"event type must be a string, got {kind!r}")
    k = event.get("k")
    if type(k) is not dict:
        raise FrameError("kline event has no object 'k'")
    event_time = _integer(event, "E", "event")
    open_time = _integer(k, "t", "kline")
    close_time = _integer(k, "T", "kline")
    interval = k.get("i")
    if interval not in INTERVAL_SECONDS:
        if interval is None:
            raise FrameError("kline field 'i' missing")
        raise FrameError(f"unknown interval {interval!r}")
    if close_time <= open_time:
        raise FrameError(f"close time T={close_time} is not after open time t={open_time}")
    sym = k.get("s")
    if type(sym) is not str or not sym:
        raise FrameError(f"kline field 's' missing or not a string: {sym!r}")
    try:
        symbol = unified_symbol(sym)
    except ValueError as exc:
        raise FrameError(str(exc)) from None
    closed = k.get("x")
    if type(closed) is not bool:
        if "x" not in k:
            raise FrameError("kline field 'x' missing")
        raise FrameError(f"kline field 'x' must be a boolean, got {closed!r}")
    o = _number(k, "o")
    h = _number(k, "h")
    low = _number(k, "l")
    c = _number(k, "c")
    v = _number(k, "v")
    if low <= 0 or o <= 0 or h <= 0 or c <= 0:
        raise FrameError(f"non-positive price in {sym} o={o} h={h} l={low} c={c}")
    if v < 0:
        raise FrameError(f"negative volume {v} in {sym}")
    if h < low:
        raise FrameError(f"high {h} below low {low} in {sym}")
    if not (low <= o <= h and low <= c <= h):
        raise FrameError(f"open {o} or close {c} outside [low {low}, high {h}] in {sym}")
    bar = Bar.model_construct(
        _BAR_FIELDS,
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        closed=closed,
    )
    if stream is None:
        stream = f"{sym.lower()}@kline_{interval}"
    return KlineUpdate(bar, event_time, stream)
