"""Macro regime (SPEC §6) on constructed FRED series: quadrants, dates, publication lags."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from trading.macro import (
    SERIES_IDS,
    FredSeries,
    MacroParams,
    Observation,
    load_fred_csv,
    macro_regime,
    months_before,
)

AS_OF = date(2024, 6, 20)


def daily(sid: str, start: float, end: float, days: int = 200) -> FredSeries:
    """Weekday values moving linearly from ``start`` to ``end`` over ``days`` up to AS_OF-2."""
    last = AS_OF - timedelta(days=2)
    obs = []
    for i in range(days + 1):
        d = last - timedelta(days=days - i)
        if d.weekday() < 5:
            obs.append(Observation(date=d, value=start + (end - start) * i / days))
    return FredSeries(series_id=sid, observations=obs)


def monthly(sid: str, values: list[float], last: date = date(2024, 4, 1)) -> FredSeries:
    """Monthly values dated the 1st, the last one at ``last`` (May data is not out by June 20)."""
    n = len(values)
    obs = [Observation(date=months_before(last, n - 1 - i), value=v) for i, v in enumerate(values)]
    return FredSeries(series_id=sid, observations=obs)


def cpi(yoy_then: float, yoy_now: float, last: date = date(2024, 4, 1)) -> FredSeries:
    """CPI levels whose YoY inflation goes from yoy_then (3 months ago) to yoy_now."""
    values = [100.0 * (1.0 + 0.002) ** i for i in range(16)]  # 16 months of base level
    values[-4] = values[-16] * (1 + yoy_then / 100)
    values[-1] = values[-13] * (1 + yoy_now / 100)
    return monthly("CPIAUCSL", values, last)


def world(growth_up: bool, inflation_up: bool) -> dict[str, FredSeries]:
    return {
        "T10Y2Y": daily("T10Y2Y", -0.5, 0.2 if growth_up else -1.0),
        "UNRATE": monthly("UNRATE", [4.0] * 12 + ([3.7] if growth_up else [4.4])),
        "T10YIE": daily("T10YIE", 2.2, 2.6 if inflation_up else 1.9),
        "CPIAUCSL": cpi(3.0, 3.8 if inflation_up else 2.4),
    }


@pytest.mark.parametrize(
    ("growth_up", "inflation_up", "quadrant", "scale", "trail"),
    [
        (True, False, "goldilocks", 1.2, 1.0),
        (True, True, "reflation", 1.0, 1.0),
        (False, True, "stagflation", 0.6, 0.75),
        (False, False, "deflation", 0.9, 0.9),
    ],
)
def test_each_quadrant(growth_up, inflation_up, quadrant, scale, trail) -> None:
    r = macro_regime(world(growth_up, inflation_up), AS_OF)
    assert r.quadrant == quadrant
    assert (r.exposure_scale, r.trail_multiplier) == (scale, trail)
    assert r.growth_direction == ("up" if growth_up else "down")
    assert r.inflation_direction == ("up" if inflation_up else "down")
    assert r.missing == [] and {i.series_id for i in r.inputs} == set(SERIES_IDS)
    assert r.reason is None and r.as_of == AS_OF


def test_changes_are_measured_by_date_three_months_back() -> None:
    r = macro_regime(world(True, True), AS_OF)
    by_id = {i.series_id: i for i in r.inputs}
    curve = by_id["T10Y2Y"]
    assert curve.latest_date == AS_OF - timedelta(days=2)
    assert curve.base_date <= months_before(curve.latest_date, 3)
    assert (months_before(curve.latest_date, 3) - curve.base_date).days < 4  # weekend at most
    assert curve.change == pytest.approx(0.7 * (curve.latest_date - curve.base_date).days / 200)
    un = by_id["UNRATE"]
    assert (un.latest_date, un.base_date) == (date(2024, 4, 1), date(2024, 1, 1))
    assert un.change == pytest.approx(-0.3) and un.score == pytest.approx(1.0)
    infl = by_id["CPIAUCSL"]
    assert infl.latest_value == pytest.approx(3.8) and infl.base_value == pytest.approx(3.0)


def test_publication_lag_hides_a_print_before_it_existed() -> None:
    series = world(True, False)
    # an April CPI print dated 2024-05-01 that says inflation jumped: published mid-June
    values = [o.value for o in series["CPIAUCSL"].observations]
    jump = FredSeries(
        series_id="CPIAUCSL",
        observations=[
            *series["CPIAUCSL"].observations,
            Observation(date=date(2024, 5, 1), value=values[-12] * 1.09),
        ],
    )
    series["CPIAUCSL"] = jump
    before = macro_regime(series, date(2024, 6, 17))  # 1 May + 47 days = 17 June: not yet
    after = macro_regime(series, date(2024, 6, 18))
    cpi_before = next(i for i in before.inputs if i.series_id == "CPIAUCSL")
    cpi_after = next(i for i in after.inputs if i.series_id == "CPIAUCSL")
    assert cpi_before.latest_date == date(2024, 4, 1)
    assert cpi_after.latest_date == date(2024, 5, 1)
    no_lag = MacroParams(lag_days={"CPIAUCSL": 0})
    early = macro_regime(series, date(2024, 5, 2), no_lag)
    assert next(i for i in early.inputs if i.series_id == "CPIAUCSL").latest_date == date(
        2024, 5, 1
    )
    # an observation dated the decision day itself is never seen, even without a lag
    same_day = macro_regime(series, date(2024, 5, 1), no_lag)
    assert next(i for i in same_day.inputs if i.series_id == "CPIAUCSL").latest_date == date(
        2024, 4, 1
    )


def test_as_of_accepts_datetime_date_and_ms() -> None:
    s = world(True, False)
    dt = datetime(2024, 6, 20, 15, 30, tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    assert macro_regime(s, dt) == macro_regime(s, ms) == macro_regime(s, AS_OF)


def test_unknown_without_data() -> None:
    r = macro_regime({}, AS_OF)
    assert r.quadrant == "unknown" and (r.exposure_scale, r.trail_multiplier) == (1.0, 1.0)
    assert r.missing == list(SERIES_IDS) and "no growth or inflation data" in r.reason
    # inflation series only: growth unknown → unknown quadrant, inputs still reported
    s = world(True, True)
    r = macro_regime({k: s[k] for k in ("T10YIE", "CPIAUCSL")}, AS_OF)
    assert r.quadrant == "unknown" and r.inflation_direction == "up"
    assert r.growth_direction == "unknown" and "growth" in r.reason


def test_one_series_per_dimension_is_enough() -> None:
    s = world(False, True)
    r = macro_regime({"UNRATE": s["UNRATE"], "T10YIE": s["T10YIE"]}, AS_OF)
    assert r.quadrant == "stagflation" and r.missing == ["T10Y2Y", "CPIAUCSL"]


def test_stale_series_count_as_missing() -> None:
    s = world(True, False)
    r = macro_regime(s, AS_OF + timedelta(days=15))  # daily series stop 2 days before AS_OF
    assert "T10Y2Y" in r.missing and "T10YIE" in r.missing
    assert any("days old" in n for n in r.notes)
    assert r.quadrant == "goldilocks"  # the monthly series still answer


def test_csv_loader_drops_missing_values(tmp_path) -> None:
    path = tmp_path / "fred_UNRATE.csv"
    path.write_text("DATE,UNRATE\n2024-01-01,3.7\n2024-02-01,.\n2024-03-01,\n2024-04-01,3.9\n")
    s = load_fred_csv(path)
    assert s.series_id == "UNRATE"
    assert [(o.date, o.value) for o in s.observations] == [
        (date(2024, 1, 1), 3.7),
        (date(2024, 4, 1), 3.9),
    ]
    path.write_text("date,value\n2024-01-01,abc\n")
    with pytest.raises(ValueError, match="bad row"):
        load_fred_csv(path)


def test_months_before_clamps_to_month_end() -> None:
    assert months_before(date(2024, 5, 31), 3) == date(2024, 2, 29)
    assert months_before(date(2024, 1, 15), 3) == date(2023, 10, 15)


@pytest.mark.data
def test_real_fred_files(data_dir) -> None:
    series = {sid: load_fred_csv(data_dir / f"fred_{sid}.csv") for sid in SERIES_IDS}
    r = macro_regime(series, date(2024, 1, 1))
    assert r.quadrant != "unknown" and r.missing == []
    unrate = next(i for i in r.inputs if i.series_id == "UNRATE")
    assert unrate.latest_date == date(2023, 11, 1)  # December's print came out in January
