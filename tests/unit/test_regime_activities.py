"""Regime and learner activities: CSV and fredapi sources, caching, failures, snapshots."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from temporalio.testing import ActivityEnvironment

from activities.learner_store import LearnerActivities, LearnerStore, learner_params_from
from activities.regimes import FRED_KEY_ENV, RegimeActivities, scrub
from tests.pg_server import db_target
from trading.config import Settings
from trading.learner import LearnerUpdateRequest, new_state, update
from trading.macro import SERIES_IDS, MacroRequest
from trading.models import Bar, ClosedTrade
from trading.regime_crypto import CryptoRegimeRequest

KEY = "k3y-abcdef0123456789"
AS_OF = datetime(2024, 6, 20, tzinfo=UTC)
AS_OF_MS = int(AS_OF.timestamp() * 1000)
DAY = 86_400_000


def fake_frame(series_id: str) -> pd.Series:
    """Two years of FRED-like data up to AS_OF: daily for the rates, monthly for the rest."""
    if series_id in ("T10Y2Y", "T10YIE"):
        idx = pd.bdate_range(AS_OF - timedelta(days=730), AS_OF - timedelta(days=2))
        values = np.linspace(-0.5, 0.3, len(idx)) if series_id == "T10Y2Y" else [2.3] * len(idx)
        s = pd.Series(values, index=idx, dtype=float)
        s.iloc[5] = np.nan  # FRED holidays come back as NaN
        return s
    idx = pd.date_range("2022-05-01", "2024-04-01", freq="MS")
    if series_id == "UNRATE":
        return pd.Series(np.linspace(4.0, 3.6, len(idx)), index=idx)
    return pd.Series(100 * 1.003 ** np.arange(len(idx)), index=idx)  # CPIAUCSL


class FakeFred:
    """Stands in for ``fredapi.Fred``: records calls, can fail like a client with a URL."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()

    def get_series(self, series_id: str, observation_start=None, **kwargs) -> pd.Series:
        self.calls.append(series_id)
        if series_id in self.fail:
            raise ValueError(
                f"Bad Request. https://api.stlouisfed.org/fred/series/observations"
                f"?series_id={series_id}&api_key={KEY}"
            )
        return fake_frame(series_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fred_env(monkeypatch, tmp_path):
    monkeypatch.setenv(FRED_KEY_ENV, KEY)
    fake, clock, keys = FakeFred(), Clock(), []

    def factory(key: str) -> FakeFred:
        keys.append(key)
        return fake

    def make() -> RegimeActivities:
        return RegimeActivities(cache_dir=tmp_path / "cache", fred_factory=factory, clock=clock)

    return make, fake, clock, keys


async def test_fredapi_path_with_an_injected_client(fred_env) -> None:
    make, fake, _, keys = fred_env
    regime = await ActivityEnvironment().run(make().macro_regime, MacroRequest(as_of_ms=AS_OF_MS))
    assert keys == [KEY]  # the key went to the client, read from the environment
    assert sorted(fake.calls) == sorted(SERIES_IDS)
    assert regime.source == "fred-api" and regime.missing == []
    assert regime.growth_direction == "up"  # curve steepening, unemployment falling
    assert regime.quadrant in ("goldilocks", "reflation")
    assert KEY not in regime.model_dump_json()


def test_api_fetches_are_cached_in_memory_and_on_disk_for_six_hours(fred_env) -> None:
    make, fake, clock, _ = fred_env
    acts = make()
    first = acts.compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    assert acts.compute_macro(MacroRequest(as_of_ms=AS_OF_MS)) == first
    assert len(fake.calls) == 4
    restarted = make()  # a new worker process: the disk cache answers
    assert restarted.compute_macro(MacroRequest(as_of_ms=AS_OF_MS)) == first
    assert len(fake.calls) == 4
    cached = (restarted.cache_dir / "fred_UNRATE.json").read_text()
    assert KEY not in cached
    clock.now += 6 * 3600 + 1
    restarted.compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    assert len(fake.calls) == 8


def test_fetch_failures_are_scrubbed_and_fall_back(fred_env) -> None:
    make, fake, clock, _ = fred_env
    fake.fail = {"T10Y2Y", "UNRATE"}
    regime = make().compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    dumped = regime.model_dump_json()
    assert regime.quadrant == "unknown" and regime.exposure_scale == 1.0
    assert "FRED fetch failed" in regime.reason and "api_key=***" in regime.reason
    assert KEY not in dumped
    # a fresh copy once, then failures: the stale copy stands in
    fake.fail = set()
    acts = make()
    good = acts.compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    clock.now += 7 * 3600
    fake.fail = set(SERIES_IDS)
    stale = acts.compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    assert stale.quadrant == good.quadrant != "unknown"
    assert any("using the copy cached earlier" in n for n in stale.notes)


def test_any_failure_answers_unknown(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(FRED_KEY_ENV, KEY)

    def broken(key: str):
        raise RuntimeError(f"cannot build client for {key}")

    regime = RegimeActivities(cache_dir=tmp_path, fred_factory=broken).compute_macro(
        MacroRequest(as_of_ms=AS_OF_MS)
    )
    assert regime.quadrant == "unknown" and (regime.exposure_scale, regime.trail_multiplier) == (
        1.0,
        1.0,
    )
    assert KEY not in regime.model_dump_json()
    monkeypatch.delenv(FRED_KEY_ENV)
    none = RegimeActivities(fred_dir=None).compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    assert none.quadrant == "unknown" and "OCW_FRED_DIR" in none.reason
    empty = RegimeActivities(fred_dir=tmp_path).compute_macro(MacroRequest(as_of_ms=AS_OF_MS))
    assert empty.quadrant == "unknown" and empty.missing == list(SERIES_IDS)


def test_scrub_removes_keys_and_url_parameters() -> None:
    assert scrub(f"x {KEY} y", KEY) == "x *** y"
    assert (
        scrub("GET /obs?api_key=zzz&file_type=json", None) == "GET /obs?api_key=***&file_type=json"
    )


@pytest.mark.data
async def test_macro_from_the_shared_csv_files(data_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(FRED_KEY_ENV, raising=False)
    acts = RegimeActivities(fred_dir=data_dir, cache_dir=tmp_path)
    as_of = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    regime = await ActivityEnvironment().run(acts.macro_regime, MacroRequest(as_of_ms=as_of))
    assert regime.quadrant != "unknown" and regime.missing == []
    assert regime.source.startswith("csv:") and regime.as_of == date(2024, 1, 1)
    assert all(i.latest_date < date(2024, 1, 1) for i in regime.inputs)
    assert list(tmp_path.iterdir()) == []  # CSV reads are not written to the API cache


def test_settings_wire_the_activities(tmp_path) -> None:
    s = Settings(home=tmp_path, macro_lag_days={"CPIAUCSL": 30}, hmm_min_days=200)
    acts = RegimeActivities.from_settings(s)
    assert acts.macro_params.lag_days["CPIAUCSL"] == 30
    assert acts.macro_params.lag_days["UNRATE"] == 40  # defaults kept for the others
    assert acts.hmm_params.min_days == 200 and acts.cache_dir == tmp_path / "cache"
    assert learner_params_from(s).decay == 0.95


# ---------------------------------------------------------------- crypto regime


def daily(sigmas: list[float], seed: int = 1) -> list[Bar]:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0.0, np.array(sigmas))))
    t0 = 1_672_531_200_000
    return [
        Bar(
            symbol="BTC/USDT",
            interval="1d",
            open_time=t0 + i * DAY,
            close_time=t0 + (i + 1) * DAY - 1,
            open=c,
            high=c,
            low=c,
            close=c,
            volume=1.0,
        )
        for i, c in enumerate(closes)
    ]


async def test_crypto_activity_fits_the_bars_it_is_given() -> None:
    bars = daily([0.01] * 250 + [0.05] * 150)
    acts = RegimeActivities(bars_source=lambda s, t: pytest.fail("bars were given"))
    req = CryptoRegimeRequest(as_of_ms=bars[-1].close_time, bars=bars)
    regime = await ActivityEnvironment().run(acts.crypto_regime, req)
    assert regime.label == "high" and regime.n_states == 2


def test_crypto_activity_loads_bars_itself_and_fails_soft() -> None:
    bars = daily([0.02] * 300)
    asked = []

    def source(symbol: str, as_of_ms: int) -> list[Bar]:
        asked.append((symbol, as_of_ms))
        return bars

    as_of = bars[200].close_time
    regime = RegimeActivities(bars_source=source).compute_crypto(
        CryptoRegimeRequest(as_of_ms=as_of)
    )
    assert asked == [("BTC/USDT", as_of)]
    assert regime.label != "unknown" and regime.fitted_through_ms == as_of

    def missing(symbol: str, as_of_ms: int) -> list[Bar]:
        raise FileNotFoundError("no CSV for BTC/USDT")

    regime = RegimeActivities(bars_source=missing).compute_crypto(
        CryptoRegimeRequest(as_of_ms=as_of)
    )
    assert regime.label == "unknown" and "no CSV" in regime.reason


@pytest.mark.data
def test_crypto_activity_on_the_shared_4h_file(data_dir) -> None:
    from activities.regimes import csv_daily_bars

    as_of = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    acts = RegimeActivities(bars_source=csv_daily_bars(data_dir))
    regime = acts.compute_crypto(CryptoRegimeRequest(as_of_ms=as_of))
    assert regime.label in ("low", "mid", "high", "extreme")
    assert regime.fitted_through_ms == as_of - 1  # the 2024-12-31 daily bar


# ---------------------------------------------------------------- learner activity


def closed(trade_id: str, pnl_pct: float) -> ClosedTrade:
    return ClosedTrade(
        trade_id=trade_id,
        symbol="ETH/USDT",
        qty=1.0,
        entry_price=100.0,
        exit_price=100.0 * (1 + pnl_pct),
        entry_time_ms=0,
        exit_time_ms=1_000 + len(trade_id),
        fees=0.2,
        pnl=100 * pnl_pct,
        pnl_pct=pnl_pct,
        exit_reason="stop_loss",
        signal_weights={"trend": 0.7, "funding": -0.2},
    )


@pytest.fixture(params=["sqlite", "postgres"])
def learner_target(request: pytest.FixtureRequest, tmp_path):
    return db_target(request, tmp_path / "learner.db")  # the SQLite file or a Postgres schema


async def test_learner_update_is_idempotent_and_snapshots_once(learner_target) -> None:
    store = LearnerStore(learner_target)
    acts = LearnerActivities(store)
    env = ActivityEnvironment()
    req = LearnerUpdateRequest(
        state=new_state(), trade=closed("p-1", 0.04), regime="high", account="paper"
    )
    state = await env.run(acts.learner_update, req)
    assert state == update(new_state(), closed("p-1", 0.04), "high")
    again = await env.run(acts.learner_update, req.model_copy(update={"state": state}))
    assert again == state
    retried = await env.run(acts.learner_update, req)  # the workflow retried with the old state
    assert retried == state
    state2 = await env.run(
        acts.learner_update,
        LearnerUpdateRequest(state=state, trade=closed("p-22", -0.03), regime="high"),
    )
    assert state2.n_trades == 2
    rows = store.rows()
    assert [r["trade_id"] for r in rows] == ["p-1", "p-22"]
    assert rows[0]["regime"] == "high" and rows[0]["set_used"] == "global"
    assert rows[0]["posteriors"]["high"]["n"] == 1
    assert rows[0]["reliabilities"]["trend"] > 0.5 and rows[0]["n_trades"] == 1
    if store.db_path is not None:
        assert store.db.execute("PRAGMA journal_mode").rows[0]["journal_mode"] == "wal"
    store.close()
