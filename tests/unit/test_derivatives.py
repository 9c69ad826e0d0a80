"""Derivatives readings: parsers, the monitor's cadence, missing and stale readings, composite."""

from __future__ import annotations

import math

import pytest

from signals.derivatives import (
    DerivativesError,
    DerivativesMonitor,
    ExtremeThresholds,
    LiquidationSummary,
    annualised_basis,
    long_short_z,
    oi_changes,
    parse_funding_history,
    parse_premium,
    taker_ratio,
    to_reading_fields,
)
from signals.rest_budget import RestBanned
from trading.rule_policy import DerivativesReading, derivatives_composite

T0 = 1_800_000_000_000
M5 = 300_000
H = 3_600_000


def oi_rows(values: list[float], step: int = M5) -> list[dict]:
    n = len(values)
    return [
        {
            "symbol": "BTCUSDT",
            "sumOpenInterest": str(v / 50_000),
            "sumOpenInterestValue": str(v),
            "timestamp": T0 - (n - 1 - i) * step,
        }
        for i, v in enumerate(values)
    ]


def ls_rows(ratios: list[float]) -> list[dict]:
    return [
        {"symbol": "BTCUSDT", "longShortRatio": str(r), "timestamp": T0 - (len(ratios) - i) * H}
        for i, r in enumerate(ratios)
    ]


def test_premium_index() -> None:
    row = {"lastFundingRate": "0.00012", "markPrice": "50100.5", "nextFundingTime": 1800000000000}
    assert parse_premium(row) == (0.00012, 50100.5, 1_800_000_000_000)
    with pytest.raises(DerivativesError, match="markPrice"):
        parse_premium({"lastFundingRate": "0.0001"})
    with pytest.raises(DerivativesError, match="implausible"):
        parse_premium({"lastFundingRate": "0.5", "markPrice": "1"})


def test_open_interest_changes_by_time_not_by_row_count() -> None:
    values = [100.0] * 277 + [110.0] * 12  # 289 five-minute points: 24 h back, +10 % in the hour
    usd, h1, h24 = oi_changes(list(reversed(oi_rows(values))))  # any order in
    assert usd == 110.0
    assert h1 == pytest.approx(0.10)
    assert h24 == pytest.approx(0.10)
    _, h1, h24 = oi_changes(oi_rows([100.0, 105.0, 120.0] + [120.0] * 10))  # one hour only
    assert h1 == pytest.approx(0.2) and h24 is None
    with pytest.raises(DerivativesError):
        oi_changes([])


def test_taker_ratio_sums_volumes_over_the_hour() -> None:
    rows = [
        {"buySellRatio": "2.0", "buyVol": "20", "sellVol": "10", "timestamp": T0},
        {"buySellRatio": "0.5", "buyVol": "10", "sellVol": "20", "timestamp": T0 + M5},
        {"buySellRatio": "1.0", "buyVol": "30", "sellVol": "30", "timestamp": T0 + 2 * M5},
    ]
    assert taker_ratio(rows) == pytest.approx(1.0)  # not the mean of the ratios (1.1667)
    with pytest.raises(DerivativesError):
        taker_ratio([{"buyVol": "1", "sellVol": "0", "timestamp": T0}])


def test_long_short_z_against_the_previous_thirty() -> None:
    base = [1.0, 2.0] * 15  # mean 1.5, population sd 0.5
    ratio, z = long_short_z(ls_rows([*base, 2.5]))
    assert ratio == 2.5 and z == pytest.approx(2.0)
    _, z = long_short_z(ls_rows([5.0] * 40 + [*base, 1.0]))  # only the last 30 count
    assert z == pytest.approx(-1.0)
    assert long_short_z(ls_rows([1.0, 1.2, 1.1]))[1] is None  # below three reference values
    assert long_short_z(ls_rows([1.0] * 10))[1] == 0.0


def test_annualised_basis() -> None:
    assert annualised_basis(50_050.0, 50_000.0) == pytest.approx(0.001 * 3 * 365)
    with pytest.raises(DerivativesError):
        annualised_basis(0.0, 1.0)


class FakeFutures:
    """Stands in for BinanceRest at the monitor's seam (the real client is tested elsewhere)."""

    def __init__(self) -> None:
        self.funding = "0.0001"
        self.fail: set[str] = set()
        self.calls = 0

    def _maybe_fail(self, name: str) -> None:
        self.calls += 1
        if name in self.fail:
            raise RestBanned("Binance REST banned (418) for 60 s more", T0 + 60_000)

    async def premium_index(self, symbol: str) -> dict:
        self._maybe_fail("premium")
        return {"lastFundingRate": self.funding, "markPrice": "50010", "nextFundingTime": T0}

    async def open_interest_hist(self, symbol: str, period: str, limit: int) -> list[dict]:
        self._maybe_fail("oi")
        return oi_rows([100.0] * 12 + [102.0])

    async def taker_long_short_ratio(self, symbol: str, period: str, limit: int) -> list[dict]:
        self._maybe_fail("taker")
        return [{"buyVol": "12", "sellVol": "10", "timestamp": T0}]

    async def top_long_short_account_ratio(self, symbol: str, period: str, limit: int) -> list:
        self._maybe_fail("ls")
        return ls_rows([1.0, 2.0] * 15 + [2.5])

    async def spot_price(self, symbol: str) -> float:
        self._maybe_fail("spot")
        return 50_000.0

    async def funding_rate_history(self, symbol: str, limit: int) -> list[dict]:
        self._maybe_fail("history")
        self.history_calls = getattr(self, "history_calls", 0) + 1
        return list(self.history)[-limit:]

    history: list[dict] = [
        {"symbol": "BTCUSDT", "fundingTime": T0 - 8 * 3_600_000 * k, "fundingRate": "0.0001"}
        for k in (2, 1, 0)
    ]


async def test_monitor_readings_cadence_missing_and_stale() -> None:
    rest = FakeFutures()
    now = [T0]
    monitor = DerivativesMonitor(
        rest,  # type: ignore[arg-type]
        ["BTC/USDT"],
        ExtremeThresholds(ls_z_abs=3.0),
        cadence_s=300,
        fast_cadence_s=60,
        stale_after_s=900,
        clock=lambda: now[0],
    )
    snap = monitor.snapshot("BTC/USDT")
    assert snap.missing == ["funding", "open_interest", "taker", "long_short", "basis"]
    assert monitor.view().missing == ["BTC/USDT"]
    await monitor.refresh()
    snap = monitor.snapshot("BTC/USDT")
    assert snap.missing == [] and snap.stale == [] and snap.extreme == []
    assert snap.funding_rate == 0.0001 and snap.taker_ratio == pytest.approx(1.2)
    assert snap.oi_change_pct == pytest.approx(0.02) and snap.ls_z == pytest.approx(2.0)
    assert snap.basis_annualised == pytest.approx(0.0002 * 1095)
    assert monitor.next_delay_s() == 300

    rest.funding = "-0.0008"  # extreme: poll every minute
    await monitor.refresh()
    assert monitor.snapshot("BTC/USDT").extreme == ["funding_rate"]
    assert monitor.view().extreme and monitor.next_delay_s() == 60

    rest.funding = "0.0001"
    rest.fail = {"taker", "spot"}  # failures keep the old value but age it
    now[0] = T0 + 10 * 60_000
    await monitor.refresh()
    now[0] = T0 + 16 * 60_000
    snap = monitor.snapshot("BTC/USDT")
    assert snap.stale == ["taker", "basis"] and snap.missing == []
    assert "BTC/USDT taker" in monitor.errors and "418" in monitor.errors["BTC/USDT taker"]
    fields = to_reading_fields(snap)
    assert fields["taker_ratio"] is None and fields["funding_rate"] == 0.0001
    d = derivatives_composite(DerivativesReading(**fields), price_direction=1.0)
    # funding below 0.0003 adds 0, taker is stale, ls_z 2 pulls down, OI +2 % confirms the rise
    assert d == pytest.approx(-0.25 * math.tanh(0.15 * 2.0) + 0.10 * math.tanh(0.02 / 0.05))


async def test_view_carries_liquidations_and_their_cascade() -> None:
    summary = LiquidationSummary(as_of_ms=T0, total_1h=6e6, cascade=True, threshold=5e6)
    monitor = DerivativesMonitor(
        FakeFutures(),  # type: ignore[arg-type]
        ["BTC/USDT"],
        clock=lambda: T0,
        liquidations=lambda: summary,
    )
    await monitor.refresh()
    view = monitor.view()
    assert view.liquidations == summary and view.extreme is True
    assert monitor.next_delay_s() == monitor.fast_cadence_s


async def test_the_funding_history_is_kept_merged_and_refreshed_when_a_print_is_due() -> None:
    """A carry family needs the last K settled prints: the monitor asks /fapi/v1/fundingRate
    once, then hourly or when a new print is due, merges what it hears, keeps the old history
    on a failure (recorded in ``errors``), and refuses an implausible answer."""
    rest = FakeFutures()
    now = [T0 + 60_000]
    monitor = DerivativesMonitor(
        rest,  # type: ignore[arg-type]
        ["BTC/USDT"],
        cadence_s=300,
        fast_cadence_s=60,
        clock=lambda: now[0],
    )
    await monitor.refresh()
    prints = monitor.funding_history()["BTC/USDT"]
    assert [t for t, _ in prints] == [T0 - 16 * 3_600_000, T0 - 8 * 3_600_000, T0]
    assert all(r == pytest.approx(0.0001) for _, r in prints) and rest.history_calls == 1
    now[0] += 5 * 60_000  # five minutes on, no print due: not asked again
    await monitor.refresh()
    assert rest.history_calls == 1
    rest.history = [*rest.history, {"fundingTime": T0 + 8 * 3_600_000, "fundingRate": "-0.0002"}]
    now[0] = T0 + 8 * 3_600_000 + 2 * 60_000  # the next print is due
    await monitor.refresh()
    prints = monitor.funding_history()["BTC/USDT"]
    assert rest.history_calls == 2 and len(prints) == 4 and prints[-1][1] == pytest.approx(-2e-4)
    rest.fail = {"history"}
    now[0] += 3_600_000
    await monitor.refresh()
    assert "418" in monitor.errors["BTC/USDT funding history"]
    assert monitor.funding_history()["BTC/USDT"] == prints  # kept as it was
    rest.fail = set()
    rest.history = [{"fundingTime": T0 + 16 * 3_600_000, "fundingRate": "0.9"}]
    now[0] += 3_600_000
    await monitor.refresh()
    assert "implausible funding rate" in monitor.errors["BTC/USDT funding history"]
    assert monitor.funding_history()["BTC/USDT"] == prints
    assert "funding history" not in monitor.snapshot("BTC/USDT").updated_ms  # not a reading


def test_parse_funding_history_sorts_dedupes_and_refuses_bad_rows() -> None:
    rows = [
        {"fundingTime": 3, "fundingRate": "0.0002"},
        {"fundingTime": "1", "fundingRate": "0.0001"},
        {"fundingTime": 3, "fundingRate": "0.0003"},
    ]
    assert parse_funding_history(rows) == [(1, 0.0001), (3, 0.0003)]
    for bad in (
        [{"fundingTime": 1, "fundingRate": "nan"}],
        [{"fundingTime": -5, "fundingRate": "0.0001"}],
        [{"fundingRate": "0.0001"}],
        ["x"],
    ):
        with pytest.raises(DerivativesError):
            parse_funding_history(bad)
