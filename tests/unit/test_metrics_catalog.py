"""The metric helpers: labels checked, NaN dropped, one instrument per meter and name."""

from __future__ import annotations

import math

import pytest

from trading import metrics


class FakeMeter:
    def __init__(self) -> None:
        self.made: list[str] = []
        self.records: list[tuple[str, float, dict]] = []

    def _make(self, name: str, *_: object):
        self.made.append(name)
        meter = self

        class Instrument:
            def add(self, value, labels):
                meter.records.append((name, value, labels))

            set = record = add

        return Instrument()

    create_counter = create_gauge_float = create_histogram_float = _make


def test_an_instrument_is_made_once_per_meter() -> None:
    meter, other = FakeMeter(), FakeMeter()
    for _ in range(3):
        metrics.observe(meter, metrics.SAFETY_LAG, 0.5, account="a")
    metrics.observe(other, metrics.SAFETY_LAG, 0.1, account="a")
    assert meter.made == [metrics.SAFETY_LAG.name] and len(meter.records) == 3
    assert other.made == [metrics.SAFETY_LAG.name]


def test_labels_are_checked_and_nan_and_none_record_nothing() -> None:
    meter = FakeMeter()
    with pytest.raises(ValueError, match="unknown labels"):
        metrics.add(meter, metrics.FILLS, account="a", colour="red")
    metrics.set_gauge(meter, metrics.EQUITY, math.nan, account="a")
    metrics.add(None, metrics.FILLS, account="a")
    assert meter.records == []
    metrics.add(meter, metrics.FILLS, account="a", side="BUY", status="FILLED")
    assert meter.records == [("ocw_fills", 1, {"account": "a", "side": "BUY", "status": "FILLED"})]


def test_exposed_names_follow_prometheus() -> None:
    assert metrics.FILLS.exposed == "ocw_fills_total"
    assert metrics.EQUITY.exposed == "ocw_equity_usd"
    assert len({m.name for m in metrics.ALL}) == len(metrics.ALL)
