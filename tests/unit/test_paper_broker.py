"""PaperBroker: pricing, balances, idempotent retries, persistence and cross-process races."""

from __future__ import annotations

import multiprocessing as mp
import random
import re
from pathlib import Path

import pytest

from activities.paper_broker import PaperBroker
from trading.models import Fill, OrderRequest, OrderStatus, Side
from trading.orders import client_order_id

BTC = "BTC/USDT"
VALID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")  # Binance spot's set (futures' is wider)


def order(
    side: Side,
    qty: float,
    ref_price: float,
    *,
    position_id: str = "pos-1",
    seq: int = 1,
    symbol: str = BTC,
    coid: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid or client_order_id(position_id, seq),
        position_id=position_id,
        seq=seq,
        symbol=symbol,
        side=side,
        qty=qty,
        ref_price=ref_price,
        market_time_ms=1_700_000_000_000 + seq,
        reason="test",
    )


@pytest.fixture
def broker(tmp_path: Path):
    b = PaperBroker(tmp_path / "nested" / "dir" / "paper.db", initial_cash=10_000.0)
    yield b
    b.close()


def test_creates_parent_dir_and_seeds_cash(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "paper.db"
    with PaperBroker(path, initial_cash=1234.5) as b:
        assert path.exists()
        assert b.balances().cash == 1234.5
        assert b.balances().holdings == {}


def test_buy_price_has_slippage_and_fee(broker: PaperBroker) -> None:
    fill = broker.place_order(order(Side.BUY, 0.1, 50_000.0))
    assert fill.status is OrderStatus.FILLED
    assert fill.price == pytest.approx(50_000.0 * 1.0005)  # 5 bps against us
    assert fill.qty == 0.1
    assert fill.fee == pytest.approx(0.1 * 50_025.0 * 0.001)
    assert fill.market_time_ms == 1_700_000_000_001


def test_buy_then_sell_moves_cash_and_holdings(broker: PaperBroker) -> None:
    buy = broker.place_order(order(Side.BUY, 0.1, 50_000.0, seq=1))
    bal = broker.balances()
    assert bal.cash == pytest.approx(10_000.0 - 5_002.5 - 5.0025)
    assert bal.holdings == {BTC: pytest.approx(0.1)}

    sell = broker.place_order(order(Side.SELL, 0.1, 51_000.0, seq=2))
    assert sell.status is OrderStatus.FILLED
    assert sell.price == pytest.approx(51_000.0 * 0.9995)
    assert sell.fee == pytest.approx(0.1 * 50_974.5 * 0.001)
    bal = broker.balances()
    expected = 10_000.0 - buy.notional - buy.fee + sell.notional - sell.fee
    assert bal.cash == pytest.approx(expected)
    assert bal.holdings == {}
    assert [f.client_order_id for f in broker.fills("pos-1")] == ["pos-1-1", "pos-1-2"]
    assert broker.fills("other") == []


def test_retry_returns_same_fill_without_touching_balances(broker: PaperBroker) -> None:
    req = order(Side.BUY, 0.1, 50_000.0)
    first = broker.place_order(req)
    after_first = broker.balances()

    again = broker.place_order(req)
    moved = broker.place_order(req.model_copy(update={"ref_price": 60_000.0}))
    assert again == first
    assert moved == first  # a retry carrying a newer price still never fills twice
    assert broker.balances() == after_first
    assert broker.fills() == [first]
    assert broker.lookup(req.client_order_id) == first


def test_insufficient_balance_is_rejected_and_stored(tmp_path: Path) -> None:
    with PaperBroker(tmp_path / "p.db", initial_cash=1_000.0) as b:
        req = order(Side.BUY, 1.0, 50_000.0)
        fill = b.place_order(req)
        assert fill.status is OrderStatus.REJECTED
        assert fill.reason.startswith("insufficient balance: need ")
        assert "have 1000.00000000" in fill.reason
        assert (fill.qty, fill.price, fill.fee) == (0.0, 0.0, 0.0)
        assert b.lookup(req.client_order_id) == fill
        assert b.balances().cash == 1_000.0
        # The rejection is final: the same id is not re-evaluated.
        cheaper = req.model_copy(update={"ref_price": 1.0})
        assert b.place_order(cheaper) == fill
        assert b.balances().cash == 1_000.0


def test_insufficient_holdings_is_rejected_and_stored(broker: PaperBroker) -> None:
    req = order(Side.SELL, 0.5, 50_000.0)
    fill = broker.place_order(req)
    assert fill.status is OrderStatus.REJECTED
    assert fill.reason.startswith("insufficient holdings")
    assert broker.lookup(req.client_order_id) == fill
    assert broker.balances().cash == 10_000.0
    assert broker.fills() == [fill]


def test_sell_within_tolerance_sells_exactly_what_is_held(broker: PaperBroker) -> None:
    broker.place_order(order(Side.BUY, 0.1, 50_000.0, seq=1))
    too_much = broker.place_order(order(Side.SELL, 0.1 * (1 + 1e-6), 50_000.0, seq=2))
    assert too_much.status is OrderStatus.REJECTED
    fill = broker.place_order(order(Side.SELL, 0.1 * (1 + 1e-12), 50_000.0, seq=3))
    assert fill.status is OrderStatus.FILLED
    assert fill.qty == 0.1
    assert broker.balances().holdings == {}


def test_all_in_buy_is_not_rejected_by_rounding(tmp_path: Path) -> None:
    with PaperBroker(tmp_path / "p.db", initial_cash=1_000.0) as b:
        price = 30_000.0 * 1.0005
        qty = 1_000.0 / (price * 1.001) * (1 + 1e-12)  # one hair above what cash allows
        fill = b.place_order(order(Side.BUY, qty, 30_000.0))
        assert fill.status is OrderStatus.FILLED
        assert fill.notional + fill.fee == pytest.approx(1_000.0)
        assert 0.0 <= b.balances().cash < 1e-6


def test_invalid_client_order_id_raises(broker: PaperBroker) -> None:
    for bad in ("has space", "x" * 37, "ünï", "semi;colon", ""):
        with pytest.raises(ValueError):
            broker.place_order(
                order(Side.BUY, 0.01, 100.0).model_copy(update={"client_order_id": bad})
            )
    assert broker.fills() == []


def test_balances_survive_reopen_without_reseeding(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    with PaperBroker(path, initial_cash=10_000.0) as b:
        buy = b.place_order(order(Side.BUY, 0.1, 50_000.0))
        before = b.balances()
    with PaperBroker(path, initial_cash=99_999.0) as b:
        assert b.balances() == before
        assert b.balances().cash == pytest.approx(10_000.0 - buy.notional - buy.fee)
        assert b.lookup(buy.client_order_id) == buy
        assert b.place_order(order(Side.BUY, 0.1, 40_000.0)) == buy


# ---------------------------------------------------------------- cross-process race

RACE_IDS = [f"race-{i}" for i in range(8)]


def _race_worker(db_path: str, barrier, results, ref_price: float) -> None:
    """Runs in a spawned process: open the (maybe new) DB, wait for the others, place orders."""
    broker = PaperBroker(Path(db_path), initial_cash=10_000.0)
    barrier.wait()
    fills = [
        broker.place_order(order(Side.BUY, 0.01, ref_price, position_id=pid, seq=1))
        for pid in RACE_IDS
    ]
    broker.close()
    results.put([f.model_dump_json() for f in fills])


def test_same_client_order_id_from_two_processes_fills_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    db = tmp_path / "race" / "paper.db"  # not created yet: the processes race on creation too
    n = 4
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(str(db), barrier, results, 50_000.0 + 100 * i))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    per_process = [[Fill.model_validate_json(s) for s in out] for out in outcomes]
    for fills in per_process[1:]:
        assert fills == per_process[0]  # every process saw the one stored fill of each id

    with PaperBroker(db, initial_cash=0.0) as b:
        stored = b.fills()
        assert len(stored) == len(RACE_IDS)
        assert all(f.status is OrderStatus.FILLED for f in stored)
        spent = sum(f.notional + f.fee for f in stored)
        bal = b.balances()
        assert bal.cash == pytest.approx(10_000.0 - spent)
        assert bal.holdings[BTC] == pytest.approx(0.01 * len(RACE_IDS))


# ---------------------------------------------------------------- client_order_id


def test_client_order_id_short_valid_ids_are_kept() -> None:
    assert client_order_id("pos-1", 2) == "pos-1-2"
    assert client_order_id("BTC-USDT_abc_1-2", 7) == "BTC-USDT_abc_1-2-7"
    # characters spot refuses (-1100) are hashed away, never sent
    assert VALID.fullmatch(client_order_id("BTC/USDT:abc_1.2", 7))
    assert client_order_id("p" * 34, 1) == "p" * 34 + "-1"  # exactly 36


def test_client_order_id_rejects_bad_seq() -> None:
    with pytest.raises(ValueError):
        client_order_id("pos", 0)


def test_client_order_id_sanitizes_without_merging() -> None:
    a, b = client_order_id("a b", 1), client_order_id("a+b", 1)
    assert VALID.fullmatch(a) and VALID.fullmatch(b)
    assert a != b
    assert a.startswith("a-b_")


def test_client_order_id_valid_deterministic_and_unique() -> None:
    rng = random.Random(20240601)
    alphabet = "abcXYZ019._:/- +#é€\t"
    long_prefix = "position-" + "x" * 40
    pids: set[str] = {long_prefix + str(i) for i in range(300)}  # shared 49-char prefix
    pids |= {"".join(rng.choices(alphabet, k=rng.randint(0, 80))) for _ in range(3000)}
    seen: dict[str, tuple[str, int]] = {}
    for pid in pids:
        for seq in (1, 2, 17, 123_456):
            coid = client_order_id(pid, seq)
            assert VALID.fullmatch(coid), (pid, seq, coid)
            assert client_order_id(pid, seq) == coid
            assert coid not in seen, (coid, seen.get(coid), (pid, seq))
            seen[coid] = (pid, seq)
    assert len(seen) == 4 * len(pids)
