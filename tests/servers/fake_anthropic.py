"""A local HTTP server that answers like Anthropic's Messages API, scripted per test.

The real ``anthropic`` client is pointed at it with ``base_url``. Each POST to
``/v1/messages`` takes the next scripted reply (status, body, delay, headers); every request
is recorded (headers and JSON body) so tests can assert on what the client sent. An empty
script answers 500 with a clear type, so a test that calls more than it scripted fails loudly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_USAGE = {
    "input_tokens": 900,
    "output_tokens": 250,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 1800,
}


@dataclass
class ScriptedReply:
    status: int = 200
    body: dict[str, Any] | str | None = None  # a str is sent as is (invalid JSON tests)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    raw: str
    body: dict[str, Any]


def message_body(
    blocks: list[dict[str, Any]],
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    model: str = "claude-sonnet-4-6",
) -> dict[str, Any]:
    has_tool = any(b.get("type") == "tool_use" for b in blocks)
    return {
        "id": "msg_fake_0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason or ("tool_use" if has_tool else "end_turn"),
        "stop_sequence": None,
        "usage": {**DEFAULT_USAGE, **(usage or {})},
    }


def tool_reply(
    name: str, payload: dict[str, Any], usage: dict[str, int] | None = None, text: str = ""
) -> ScriptedReply:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks.append({"type": "tool_use", "id": "toolu_fake_01", "name": name, "input": payload})
    return ScriptedReply(body=message_body(blocks, usage))


def text_reply(text: str, usage: dict[str, int] | None = None) -> ScriptedReply:
    return ScriptedReply(body=message_body([{"type": "text", "text": text}], usage))


def error_reply(
    status: int, error_type: str, message: str = "", headers: dict[str, str] | None = None
) -> ScriptedReply:
    body = {"type": "error", "error": {"type": error_type, "message": message or error_type}}
    return ScriptedReply(status=status, body=body, headers=headers or {})


class FakeAnthropic:
    """``async with FakeAnthropic() as server``: ``server.base_url``, ``push``, ``requests``."""

    def __init__(self, responder: Callable[[dict[str, Any]], ScriptedReply] | None = None) -> None:
        # ``responder`` answers (from the request body) once the scripted replies are used up
        self.responder = responder
        self.replies: list[ScriptedReply] = []
        self.requests: list[ReceivedRequest] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def push(self, *replies: ScriptedReply) -> None:
        self.replies.extend(replies)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        headers = {k.lower(): v for k, v in request.headers.items()}  # names lower-cased
        self.requests.append(ReceivedRequest(request.path, headers, raw, body))
        if self.replies:
            reply = self.replies.pop(0)
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            reply = error_reply(500, "api_error", "fake server: no scripted reply left")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body or {})
        return web.Response(
            status=reply.status,
            text=text,
            content_type="application/json",
            headers={"request-id": "req_fake", **reply.headers},
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
