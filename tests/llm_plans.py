"""Exit plans for scripted LLM answers (issue 15): a BUY without one is rejected, as the real
model is told. ``exit_plan(price)`` is valid whatever the symbol's ATR: a stop well below the
hard stop (kept at it, with a note), a target 10 % up, invalid 3 % down."""

from __future__ import annotations

import re
from typing import Any


def exit_plan(price: float, symbol: str = "BTC/USDT") -> dict[str, Any]:
    return {
        "stop_price": round(price * 0.90, 8),
        "target_price": round(price * 1.10, 8),
        "invalidation": {
            "metric": f"{symbol}:price",
            "operator": "lt",
            "threshold": round(price * 0.97, 8),
            "reason": "support lost",
        },
    }


def price_in_prompt(body: dict[str, Any], symbol: str) -> float:
    """The symbol's price on its line of the snapshot the engine sent (trading/snapshot.py)."""
    prompt = body["messages"][0]["content"]
    text = prompt if isinstance(prompt, str) else " ".join(b.get("text", "") for b in prompt)
    found = re.search(rf"(?m)^\W*{re.escape(symbol)} ([0-9][0-9.]*)\b", text)
    if found is None:
        raise AssertionError(f"no price of {symbol} in the prompt")
    return float(found.group(1))


def with_plans(answer: dict[str, Any], prices: dict[str, float]) -> dict[str, Any]:
    """``answer`` with a plan on each BUY whose symbol has a price in ``prices``."""
    for d in answer.get("decisions", []):
        if isinstance(d, dict) and d.get("action") == "BUY" and d.get("ticker") in prices:
            d.setdefault("exit_plan", exit_plan(prices[d["ticker"]], d["ticker"]))
    return answer
