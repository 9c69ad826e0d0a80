"""The LLM store's spend ledger, saved breakers and bounded journal; the ledger's pure models.

The store's tests run on both back ends: the SQLite file and PostgreSQL (``tests/pg_server.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.llm_agent import parse_message, parse_usage
from activities.llm_cache import (
    JOURNAL_MAX_BYTES,
    CachedAnswer,
    CallRecord,
    LLMStore,
    bounded,
    utf8_clean,
)
from tests.pg_server import db_target
from trading.circuit_breaker import BreakerState
from trading.llm_budget import (
    ACCOUNT_MAX_CHARS,
    BreakerSave,
    LedgerRequest,
    LedgerView,
    day_key,
    ledger_account,
)
from trading.llm_pricing import TokenUsage

DAY1, DAY2 = "2025-03-01", "2025-03-02"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    return db_target(request, tmp_path / "llm.db")


@pytest.fixture
def store(target: Path | SecretStr) -> Iterator[LLMStore]:
    s = LLMStore(target)
    yield s
    s.close()


def test_spend_is_summed_per_account_and_day_and_idempotent_per_call(store, target) -> None:
    assert store.day_spend("paper", DAY1) == (0.0, 0)
    assert store.add_spend("c1", "paper", DAY1, 0.25)
    assert not store.add_spend("c1", "paper", DAY1, 0.25)  # a retried write counts once
    store.add_spend("c2", "paper", DAY1, 0.10, estimated=True)
    store.add_spend("c3", "paper", DAY2, 1.00)
    store.add_spend("c4", "other", DAY1, 5.00)
    store.add_spend("c5", "paper", DAY1, -3.0)  # never a refund
    assert store.day_spend("paper", DAY1) == (pytest.approx(0.35), 3)
    assert store.day_spend("paper", DAY2) == (1.0, 1)
    assert store.day_spend("other", DAY1) == (5.0, 1)
    store.close()
    again = LLMStore(target)  # on disk (or on the server)
    assert again.day_spend("paper", DAY1)[1] == 3
    again.close()


def test_breakers_are_upserted_per_account(store) -> None:
    assert store.breaker("paper") is None
    store.save_breaker("paper", BreakerState(phase="open", trips=1).model_dump(mode="json"))
    store.save_breaker("paper", BreakerState(trips=1).model_dump(mode="json"))
    store.save_breaker("other", BreakerState(phase="half_open").model_dump(mode="json"))
    assert BreakerState.model_validate(store.breaker("paper")) == BreakerState(trips=1)
    assert store.breaker("other")["phase"] == "half_open"


def test_a_corrupt_breaker_row_reads_as_none(store) -> None:
    store.db.execute(
        "INSERT INTO llm_breakers (account, state, saved_at) VALUES ('paper', '{oops', 'now')"
    )
    assert store.breaker("paper") is None


def test_an_older_file_gets_the_new_tables(tmp_path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE llm_runs (run_id TEXT PRIMARY KEY, spent_usd REAL, calls INT)")
    conn.execute("INSERT INTO llm_runs VALUES ('r', 1.5, 3)")
    conn.commit()
    conn.close()
    store = LLMStore(path)
    assert store.run_spent("r") == 1.5 and store.day_spend("paper", DAY1) == (0.0, 0)


def test_journal_rows_are_bounded_and_utf8_clean(store) -> None:
    rec = CallRecord(
        call_id="c\ud800",
        kind="decide",
        model="m",
        cache_key="k",
        prompt="p" * 200_000,
        answer=json.dumps([{"type": "text", "text": "é" * 1_000_000}], ensure_ascii=False),
        error="InvalidAgentAnswer: \udfff",
    )
    assert store.record_call(rec)
    (row,) = store.calls()
    assert len(row.answer.encode()) <= JOURNAL_MAX_BYTES and len(row.prompt) <= JOURNAL_MAX_BYTES
    assert row.answer.endswith("…[truncated: 2000030 bytes]")
    assert row.prompt.endswith("…[truncated: 200000 bytes]")
    assert row.call_id == "c\ufffd" and row.error.endswith("\ufffd")


def test_the_cache_stores_surrogates_replaced(store) -> None:
    store.put(CachedAnswer(key="k", kind="decide", model="m", content=[{"text": "\ud800"}]))
    assert store.get("k").content == [{"text": "\ufffd"}]


def test_bounded_and_utf8_clean() -> None:
    assert bounded("short") == "short"
    cut = bounded("€" * 100, max_bytes=50)
    assert len(cut.encode()) <= 50 and cut.endswith("bytes]") and cut.startswith("€")
    assert utf8_clean("a\ud83d\ude00b") == "a\ufffd\ufffdb"  # split pair: both replaced
    assert utf8_clean("a😀b") == "a😀b"


# ---------------------------------------------------------------- parsing a 200 body


def test_parse_usage_accepts_only_token_counts() -> None:
    assert parse_usage({"input_tokens": 5, "output_tokens": 2}) == TokenUsage(
        input_tokens=5, output_tokens=2
    )
    full = {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": 4,
    }
    assert parse_usage(full) == TokenUsage(
        input_tokens=1, output_tokens=2, cache_read_input_tokens=4
    )
    for bad in (None, [], {}, {"input_tokens": 1}, {"input_tokens": -1, "output_tokens": 1},
                {"input_tokens": True, "output_tokens": 1},
                {"input_tokens": 1.5, "output_tokens": 1}):  # fmt: skip
        assert parse_usage(bad) is None
    assert parse_usage({"input_tokens": 10**30, "output_tokens": 0}).input_tokens == 10**9


def test_parse_message_never_raises() -> None:
    ok = json.dumps(
        {
            "content": [{"type": "text", "text": "hi\ud800", "extra": 1}],
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "stop_reason": "end_turn",
        }
    ).encode()
    content, usage, stop, problem = parse_message(ok, "application/json")
    assert (
        content == [{"type": "text", "text": "hi\ufffd"}] and problem == "" and stop == "end_turn"
    )
    assert usage == TokenUsage(input_tokens=3, output_tokens=1)
    for body in (b"", b"\xff\xfe", b"<html>", b"[]", b"1", b"{" * 50_000, b"[" * 50_000):
        content, usage, _, problem = parse_message(body, "text/html; charset=utf-8")
        assert problem and content is None and usage is None
    _, _, _, problem = parse_message(b"<p>", "text/html; charset=utf-8")
    assert problem == "the 200 body is not JSON (text/html, 3 bytes)"
    _, _, _, problem = parse_message(b'{"content": [{"text": "no type"}], "usage": {}}', "")
    assert problem == "answer has no usable usage; answer has no content list of blocks"


# ---------------------------------------------------------------- the pure models


def test_day_key_clamps_instead_of_raising() -> None:
    assert day_key(1_740_801_600_000) == "2025-03-01"
    assert day_key(-(10**15)) == "1970-01-01" and day_key(10**19) == "9999-12-31"


def test_ledger_models_normalise_the_account() -> None:
    assert LedgerRequest(account="  paper ", time_ms=0).account == "paper"
    assert len(LedgerRequest(account="x" * 999, time_ms=0).account) == ACCOUNT_MAX_CHARS
    assert BreakerSave(account=" a ", breaker=BreakerState()).account == "a"
    assert ledger_account(" b ") == "b"
    with pytest.raises(ValueError):
        LedgerView(day=DAY1, day_usd=-1.0)
    with pytest.raises(ValueError):
        LedgerRequest(account="a", time_ms=0, extra=1)  # type: ignore[call-arg]


def test_the_ledger_models_are_workflow_safe() -> None:
    """trading/llm_budget.py is imported by workflow code: standard library + pydantic only."""
    import ast

    tree = ast.parse(Path("trading/llm_budget.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module)
    assert roots <= {
        "__future__",
        "datetime",
        "pydantic",
        "trading.models",
        "trading.circuit_breaker",
    }
