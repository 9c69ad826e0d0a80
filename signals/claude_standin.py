"""A local stand-in for Claude's Messages API, for the demo's arena (``ocw demo --arena``).

It speaks ``POST /v1/messages`` as the real API does for the engine's calls (a forced tool
call, ``usage`` in the answer), so the worker's real ``anthropic`` client, the validation of
every answer, the cost accounting and the circuit breaker all run as they would against
Anthropic; only the judgement is a simple, deterministic stand-in, read off the snapshot the
engine sent (``trading/snapshot.py``'s one line per symbol):

* a symbol not held is bought when its 9 EMA is above its 21, its 14-bar momentum is
  positive and RSI is below 70, at 15 % of the portfolio, with an exit plan (stop 6 % below,
  target 9 % above, invalidated 3 % below the entry);
* a held symbol is sold when the 9 EMA falls under the 21 or momentum turns negative;
* position checks hold.

Usage is estimated from the request's size (3.5 characters a token, as the test server in
``tests/servers/fake_anthropic.py`` does) so the leaderboard shows an LLM cost; nothing is
billed. It is no model: it only lets the arena show Claude's path without a key or a network.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any

from aiohttp import web

from trading.agent_contract import DECISION_TOOL, EVALUATION_TOOL

CHARS_PER_TOKEN = 3.5
POSITION_PCT = 0.15
_LINE = re.compile(r"^(?P<sym>[A-Z0-9]+/[A-Z0-9]+) (?P<price>[0-9.]+) \| (?P<rest>.*)$")
_HELD = re.compile(r"^- (?P<sym>[A-Z0-9]+/[A-Z0-9]+)( SHORT)? entry ")
_EMA = re.compile(r"ema9/21/50 (?P<a>[0-9.]+)/(?P<b>[0-9.]+)/(?P<c>[0-9.]+)")
_MOM = re.compile(r"mom14 (?P<m>[+-][0-9.]+)%")
_RSI = re.compile(r"rsi (?P<r>[0-9.]+)")


def _prompt_text(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


def _symbols(prompt: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in prompt.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        rest = m.group("rest")
        ema, mom, rsi = _EMA.search(rest), _MOM.search(rest), _RSI.search(rest)
        if ema is None or mom is None:
            continue
        out[m.group("sym")] = {
            "price": float(m.group("price")),
            "ema9": float(ema.group("a")),
            "ema21": float(ema.group("b")),
            "ema50": float(ema.group("c")),
            "mom": float(mom.group("m")) / 100,
            "rsi": float(rsi.group("r")) if rsi else 50.0,
        }
    return out


def _held(prompt: str) -> set[str]:
    return {m.group("sym") for line in prompt.splitlines() if (m := _HELD.match(line.strip()))}


def exit_plan(symbol: str, price: float) -> dict[str, Any]:
    return {
        "stop_price": round(price * 0.94, 8),
        "target_price": round(price * 1.09, 8),
        "invalidation": {
            "metric": f"{symbol}:price",
            "operator": "lt",
            "threshold": round(price * 0.97, 8),
            "reason": "the breakout failed",
        },
    }


def decide(prompt: str) -> dict[str, Any]:
    """The stand-in's decision payload for one snapshot."""
    held = _held(prompt)
    decisions = []
    for symbol, f in _symbols(prompt).items():
        up = f["ema9"] > f["ema21"] and f["mom"] > 0 and f["rsi"] < 70
        down = f["ema9"] < f["ema21"] or f["mom"] < 0
        if symbol not in held and up:
            decisions.append(
                {
                    "ticker": symbol,
                    "action": "BUY",
                    "position_pct": POSITION_PCT,
                    "confidence": 0.6,
                    "reasoning": "fast EMA over slow, momentum positive, RSI not stretched",
                    "signal_weights": {"trend": 0.6, "momentum": 0.4},
                    "exit_plan": exit_plan(symbol, f["price"]),
                }
            )
        elif symbol in held and down:
            decisions.append(
                {
                    "ticker": symbol,
                    "action": "SELL",
                    "position_pct": 0.0,
                    "confidence": 0.6,
                    "reasoning": "trend broke: fast EMA under slow, or momentum negative",
                    "signal_weights": {"trend": 0.7, "momentum": 0.3},
                }
            )
    acted = ", ".join(f"{d['ticker']} {d['action']}" for d in decisions) or "nothing to do"
    return {
        "decisions": decisions,
        "market_assessment": f"stand-in trend reader: {acted}"[:200],
        "next_check_seconds": 14_400,
        "memory_update": f"last: {acted}"[:200],
    }


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API answer to one of the engine's requests."""
    tool = (body.get("tool_choice") or {}).get("name")
    if tool == EVALUATION_TOOL:
        payload: dict[str, Any] = {"verdict": "HOLD", "confidence": 0.5, "reasoning": "intact"}
    elif tool == DECISION_TOOL:
        payload = decide(_prompt_text(body))
    else:
        raise ValueError(f"unexpected tool {tool!r}")
    system = body.get("system") or ""
    sys_text = system if isinstance(system, str) else "".join(b["text"] for b in system)
    tools_text = json.dumps(body.get("tools") or [])
    return {
        "id": f"msg_standin_{secrets.token_hex(6)}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [{"type": "tool_use", "id": "toolu_standin", "name": tool, "input": payload}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens(sys_text + tools_text + _prompt_text(body)) + 313,
            "output_tokens": _tokens(json.dumps(payload)),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


class ClaudeStandIn:
    """``await ClaudeStandIn().start()``: ``base_url`` and ``api_key`` for the worker's env."""

    def __init__(self) -> None:
        self.api_key = f"standin-{secrets.token_hex(8)}"  # a local server's, worthless elsewhere
        self.base_url = ""
        self.calls = 0
        self._runner: web.AppRunner | None = None

    async def _messages(self, request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != self.api_key:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "key"}},
                status=401,
            )
        try:
            body = await request.json()
            out = answer(body)
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": str(err)}},
                status=400,
            )
        self.calls += 1
        return web.json_response(out, headers={"request-id": "req_standin"})

    async def start(self) -> ClaudeStandIn:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
