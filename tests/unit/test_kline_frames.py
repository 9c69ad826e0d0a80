"""Binance kline frames: names, exact encoding, round trip and every rejection."""

from __future__ import annotations

import json
import time

import pytest

from signals.kline_frames import (
    FrameError,
    KlineUpdate,
    NotAKline,
    encode_kline_event,
    encode_kline_frame,
    exchange_symbol,
    parse_kline_frame,
    parse_stream_name,
    stream_name,
    unified_symbol,
)
from trading.models import Bar

T0 = 1_740_787_200_000  # 2025-03-01T00:00:00Z


def make_bar(**overrides) -> Bar:
    fields = dict(
        symbol="BTC/USDT",
        interval="1h",
        open_time=T0,
        close_time=T0 + 3_600_000 - 1,
        open=84349.95,
        high=84500.1,
        low=84000.0,
        close=84400.5,
        volume=1234.56789,
        closed=False,
    )
    fields.update(overrides)
    return Bar(**fields)


def test_names():
    assert stream_name("BTC/USDT", "4h") == "btcusdt@kline_4h"
    assert exchange_symbol("BTC/USDT") == "BTCUSDT"
    assert unified_symbol("BTCUSDT") == "BTC/USDT"
    assert unified_symbol("btcfdusd") == "BTC/FDUSD"
    assert unified_symbol("ETHBTC") == "ETH/BTC"
    assert unified_symbol("BNBETH") == "BNB/ETH"
    assert unified_symbol("PAXGUSDT") == "PAXG/USDT"
    assert unified_symbol("USDTTRY") == "USDT/TRY"
    assert unified_symbol("ETH/USDT") == "ETH/USDT"
    for bad in ("USDT", "XYZ"):
        with pytest.raises(ValueError):
            unified_symbol(bad)
    assert parse_stream_name("ethusdt@kline_15m") == ("ETH/USDT", "15m")
    for bad in ("ethusdt@trade", "ethusdt@kline_7h", "ethusdt"):
        with pytest.raises(ValueError):
            parse_stream_name(bad)


def test_encoding_is_binance_combined_format():
    frame = encode_kline_frame(make_bar(), T0 + 1000)
    expected = (
        '{"stream":"btcusdt@kline_1h","data":{"e":"kline","E":1740787201000,"s":"BTCUSDT",'
        '"k":{"t":1740787200000,"T":1740790799999,"s":"BTCUSDT","i":"1h",'
    )
    assert frame.startswith(expected)
    k = json.loads(frame)["data"]["k"]
    assert list(k) == [
        "t",
        "T",
        "s",
        "i",
        "f",
        "L",
        "o",
        "c",
        "h",
        "l",
        "v",
        "n",
        "x",
        "q",
        "V",
        "Q",
        "B",
    ]
    assert (k["o"], k["h"], k["l"], k["c"], k["v"]) == (
        "84349.95",
        "84500.1",
        "84000.0",
        "84400.5",
        "1234.56789",
    )
    assert k["x"] is False and isinstance(k["n"], int) and k["B"] == "0"
    for key in "qVQ":
        assert isinstance(k[key], str) and float(k[key]) > 0
    assert json.loads(encode_kline_event(make_bar(), 5)) == json.loads(frame)["data"] | {"E": 5}


@pytest.mark.parametrize("closed", [False, True])
def test_round_trip_envelope_raw_and_bytes(closed):
    bar = make_bar(closed=closed, open=0.1 + 0.2, low=0.3, high=0.31, close=0.305, volume=0.0)
    update = parse_kline_frame(encode_kline_frame(bar, T0 + 7))
    assert update == KlineUpdate(bar, T0 + 7, "btcusdt@kline_1h")
    assert update.bar.open == 0.1 + 0.2  # shortest repr round-trips exactly
    raw = parse_kline_frame(encode_kline_event(bar, T0 + 7).encode())
    assert raw == update


def _frame(event_overrides=None, k_overrides=None, drop=(), envelope=True) -> str:
    obj = json.loads(encode_kline_frame(make_bar(), T0 + 1000))
    event = obj["data"]
    event["k"].update(k_overrides or {})
    event.update(event_overrides or {})
    for key in drop:
        if key == "E":
            del event["E"]
        else:
            del event["k"][key]
    return json.dumps(obj if envelope else event)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"kline"', "not a JSON object"),
        ('{"stream": "btcusdt@kline_1h", "data": 5}', "no object 'data'"),
        ('{"code": 2, "msg": "Invalid request"}', "no 'e' field"),
        ('{"error": {"code": 2}, "id": 1}', "no 'e' field"),
        (_frame({"e": 5}), "event type must be a string"),
        (_frame({"k": []}), "no object 'k'"),
        (_frame(drop=["o"]), "'o' missing"),
        (_frame(drop=["t"]), "'t' missing"),
        (_frame(drop=["E"]), "'E' missing"),
        (_frame(drop=["s"]), "'s' missing"),
        (_frame(drop=["i"]), "'i' missing"),
        (_frame(drop=["x"]), "'x' missing"),
        (_frame(k_overrides={"t": "123"}), "'t' must be an integer"),
        (_frame({"E": 1.5}), "'E' must be an integer"),
        (_frame(k_overrides={"x": "true"}), "'x' must be a boolean"),
        (_frame(k_overrides={"c": "abc"}), "'c' is not numeric"),
        (_frame(k_overrides={"v": ""}), "'v' is not numeric"),
        (_frame(k_overrides={"h": None}), "'h' is not numeric"),
        (_frame(k_overrides={"h": True}), "'h' is not numeric"),
        (_frame(k_overrides={"c": "NaN"}), "not finite"),
        (_frame(k_overrides={"h": "inf"}), "not finite"),
        (_frame(k_overrides={"v": "1e999"}), "not finite"),
        (_frame(k_overrides={"l": "0"}), "non-positive price"),
        (_frame(k_overrides={"o": "-1", "l": "-2"}), "non-positive price"),
        (_frame(k_overrides={"v": "-0.5"}), "negative volume"),
        (_frame(k_overrides={"h": "83000", "o": "83500", "c": "83500"}), "high 83000.0 below low"),
        (_frame(k_overrides={"o": "85000"}), "outside"),
        (_frame(k_overrides={"c": "83999.99"}), "outside"),
        (_frame(k_overrides={"i": "7h"}), "unknown interval '7h'"),
        (_frame(k_overrides={"T": T0}), "not after open time"),
        (_frame(k_overrides={"T": T0 - 5}), "not after open time"),
        (_frame(k_overrides={"s": "XYZ"}), "cannot split"),
        (_frame(k_overrides={"s": 12}), "'s' missing or not a string"),
    ],
)
def test_malformed_frames_are_rejected(raw, needle):
    with pytest.raises(FrameError, match=needle) as info:
        parse_kline_frame(raw)
    assert not isinstance(info.value, NotAKline)


def test_raw_event_malformed_too():
    with pytest.raises(FrameError, match="outside"):
        parse_kline_frame(_frame(k_overrides={"o": "85000"}, envelope=False))


@pytest.mark.parametrize(
    "raw",
    [
        '{"result":null,"id":1}',
        '{"result":["btcusdt@kline_1h"],"id":3}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT"}}',
        '{"e":"24hrTicker","E":1,"s":"BTCUSDT"}',
    ],
)
def test_non_kline_frames_raise_not_a_kline(raw):
    with pytest.raises(NotAKline):
        parse_kline_frame(raw)
    assert issubclass(NotAKline, FrameError) and issubclass(FrameError, ValueError)


def test_parse_is_fast_enough():
    frames = [encode_kline_frame(make_bar(close=84000.0 + i % 100), T0 + i) for i in range(2000)]
    start = time.perf_counter()
    for _ in range(10):
        for frame in frames:
            parse_kline_frame(frame)
    rate = 20_000 / (time.perf_counter() - start)
    assert rate > 30_000, f"only {rate:.0f} frames/s"
