"""A local HTTP server that answers like Anthropic's Messages API, scripted per test.

The real ``anthropic`` client is pointed at it with ``base_url``. Each POST to
``/v1/messages`` takes the next scripted reply (status, body, delay, headers); every request
is recorded (headers and JSON body) so tests can assert on what the client sent. An empty
script answers 500 with a clear type, so a test that calls more than it scripted fails loudly.

It is as strict as the real API where the engine could get it wrong:

* headers: a credential (``x-api-key``, or ``Authorization: Bearer``; equal to ``api_key`` when
  one is given) or 401 ``authentication_error``; ``anthropic-version`` and a JSON content type
  or 400 ``invalid_request_error``. Rejected requests are recorded but take no scripted reply;
* the body: a JSON object with ``model``, a positive integer ``max_tokens``, non-empty
  ``messages`` with valid roles, well-formed ``system``, ``tools``, ``tool_choice`` (naming a
  tool that exists), ``temperature`` in [0, 1], at most 4 ``cache_control`` marks, no unknown
  top-level field; otherwise 400 ``invalid_request_error``;
* ``usage`` follows the request unless a test scripts it: input tokens from the request's
  text size (~3.5 characters a token, plus the tool-use preamble when tools are sent), output
  tokens from the answer's size. Prompt caching as Anthropic bills it: only a prefix that
  ends at a block marked ``cache_control`` is cached (tools, then system, then messages), only
  when it holds at least ``cache_min_tokens``; the first marked request writes it
  (``cache_creation_input_tokens``), a request with the same prefix within 5 minutes of the
  last write or read reads it (``cache_read_input_tokens``, which refreshes it);
  ``input_tokens`` counts only the rest;
* anything else can be scripted: non-JSON bodies with any content type (an HTML 200 or 502),
  bodies missing ``usage`` or ``content`` (``drop``), a body trickled in chunks
  (``trickle_s``) so that no single read is slow but the whole answer is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Kept for callers that want a fixed, explicitly scripted usage (``tool_reply(..., usage=...)``);
# the server itself never falls back to it.
DEFAULT_USAGE = {
    "input_tokens": 900,
    "output_tokens": 250,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 1800,
}
USAGE_KEYS = tuple(DEFAULT_USAGE)
CHARS_PER_TOKEN = 3.5
TOOL_PREAMBLE_TOKENS = 313  # what Anthropic adds to the system prompt when tools are sent
CACHE_TTL_S = 300.0
CACHE_MIN_TOKENS = 1024  # Sonnet / Opus minimum cacheable prefix
MAX_CACHE_MARKS = 4
API_VERSION = "2023-06-01"
_TOP_LEVEL = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "tools",
    "tool_choice",
    "metadata",
    "stop_sequences",
    "stream",
    "top_k",
    "top_p",
    "thinking",
    "service_tier",
}
_CHOICES = ("auto", "any", "tool", "none")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


@dataclass
class ScriptedReply:
    status: int = 200
    body: dict[str, Any] | str | None = None  # a str is sent as is (invalid JSON, HTML, ...)
    delay_s: float = 0.0  # before the status line
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # a "message" body without usage gets one computed from the request (tool_reply etc.)
    auto_usage: bool = False
    drop: tuple[str, ...] = ()  # top-level keys removed from the body before it is sent
    trickle_s: float = 0.0  # > 0: the body is sent in ``chunks`` pieces, one every trickle_s
    chunks: int = 10


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    raw: str
    body: dict[str, Any]
    status: int = 0  # what the server answered
    usage: dict[str, int] | None = None  # the usage it reported (None: none in the answer)


def message_body(
    blocks: list[dict[str, Any]],
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    model: str = "claude-sonnet-4-6",
) -> dict[str, Any]:
    """A Messages API answer; without ``usage`` it has none (the server computes it when the
    reply says ``auto_usage``). Scripted usage is taken as given, missing keys 0."""
    has_tool = any(b.get("type") == "tool_use" for b in blocks)
    body: dict[str, Any] = {
        "id": "msg_fake_0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason or ("tool_use" if has_tool else "end_turn"),
        "stop_sequence": None,
    }
    if usage is not None:
        body["usage"] = {**dict.fromkeys(USAGE_KEYS, 0), **usage}
    return body


def tool_reply(
    name: str,
    payload: dict[str, Any],
    usage: dict[str, int] | None = None,
    text: str = "",
    drop: tuple[str, ...] = (),
) -> ScriptedReply:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks.append({"type": "tool_use", "id": "toolu_fake_01", "name": name, "input": payload})
    return ScriptedReply(body=message_body(blocks, usage), auto_usage=usage is None, drop=drop)


def text_reply(
    text: str, usage: dict[str, int] | None = None, drop: tuple[str, ...] = ()
) -> ScriptedReply:
    blocks = [{"type": "text", "text": text}]
    return ScriptedReply(body=message_body(blocks, usage), auto_usage=usage is None, drop=drop)


def error_reply(
    status: int, error_type: str, message: str = "", headers: dict[str, str] | None = None
) -> ScriptedReply:
    body = {"type": "error", "error": {"type": error_type, "message": message or error_type}}
    return ScriptedReply(status=status, body=body, headers=headers or {})


def html_reply(status: int = 200, text: str = "") -> ScriptedReply:
    """What a proxy or load balancer answers: an HTML page, any status."""
    page = text or f"<html><head><title>{status}</title></head><body>Bad Gateway</body></html>"
    return ScriptedReply(status=status, body=page, content_type="text/html")


# ---------------------------------------------------------------- request checks


class _Invalid(Exception):
    """400 invalid_request_error with this message."""


def _check_cache_control(block: Any, where: str) -> bool:
    if not isinstance(block, dict) or "cache_control" not in block:
        return False
    cc = block["cache_control"]
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise _Invalid(f"{where}.cache_control: type must be 'ephemeral'")
    if cc.get("ttl", "5m") not in ("5m", "1h") or set(cc) - {"type", "ttl"}:
        raise _Invalid(f"{where}.cache_control: unexpected field")
    return True


def _check_content_block(block: Any, where: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _Invalid(f"{where}: each content block needs a 'type'")
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _Invalid(f"{where}.text: Field required")
    if kind == "tool_use" and not isinstance(block.get("input"), dict):
        raise _Invalid(f"{where}.input: must be an object")
    if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        raise _Invalid(f"{where}.tool_use_id: Field required")


def validate_request(body: Any) -> None:
    """Raise ``_Invalid`` where the real Messages API would answer 400."""
    if not isinstance(body, dict):
        raise _Invalid("request body must be a JSON object")
    extra = set(body) - _TOP_LEVEL
    if extra:
        raise _Invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise _Invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _Invalid("max_tokens: must be a positive integer")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0.0 <= temperature <= 1.0
    ):
        raise _Invalid("temperature: must be between 0 and 1")
    if body.get("stream"):
        raise _Invalid("stream: this fake server does not stream")
    marks = 0
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise _Invalid("tools: Input should be a valid list")
    names = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not _TOOL_NAME.match(str(tool.get("name", ""))):
            raise _Invalid(f"tools.{i}.name: invalid tool name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Invalid(f"tools.{i}.input_schema: must be a JSON schema of type object")
        if tool["name"] in names:
            raise _Invalid(f"tools: tool names must be unique ({tool['name']})")
        names.add(tool["name"])
        marks += _check_cache_control(tool, f"tools.{i}")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise _Invalid("system: must be a string or a list of text blocks")
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise _Invalid(f"system.{i}: must be a text block")
            if not isinstance(block.get("text"), str):
                raise _Invalid(f"system.{i}.text: Field required")
            marks += _check_cache_control(block, f"system.{i}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: must be 'user' or 'assistant'")
        content = msg.get("content")
        if isinstance(content, str):
            if not content:
                raise _Invalid(f"messages.{i}: content must be non-empty")
            continue
        if not isinstance(content, list) or not content:
            raise _Invalid(f"messages.{i}.content: must be a string or a list of blocks")
        for j, block in enumerate(content):
            _check_content_block(block, f"messages.{i}.content.{j}")
            marks += _check_cache_control(block, f"messages.{i}.content.{j}")
    if messages[0].get("role") != "user":
        raise _Invalid("messages: the first message must use the 'user' role")
    if marks > MAX_CACHE_MARKS:
        raise _Invalid(f"A maximum of {MAX_CACHE_MARKS} blocks with cache_control may be provided")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
            raise _Invalid("tool_choice: type must be auto, any, tool or none")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise _Invalid(f"tool_choice.name: no tool named {choice.get('name')!r}")
        if choice["type"] in ("any", "tool") and not names:
            raise _Invalid("tool_choice: requires tools")


# ---------------------------------------------------------------- usage


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def _unmarked(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def request_blocks(body: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """The request as Anthropic caches it, in order (tools, system, messages): per block its
    canonical text, its tokens and whether it carries a ``cache_control`` mark."""
    out: list[tuple[str, int, bool]] = []
    tools = body.get("tools") or []
    for i, tool in enumerate(tools):
        text = json.dumps(_unmarked(tool), sort_keys=True, ensure_ascii=False)
        preamble = TOOL_PREAMBLE_TOKENS if i == 0 else 0
        out.append((text, _tokens(len(text)) + preamble, "cache_control" in tool))
    system = body.get("system")
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in system or []:
        out.append((block["text"], _tokens(len(block["text"])), "cache_control" in block))
    for msg in body["messages"]:
        content = msg["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content:
            text = block["text"] if block.get("type") == "text" else json.dumps(_unmarked(block))
            out.append((f"{msg['role']}:{text}", _tokens(len(text)) + 2, "cache_control" in block))
    return out


def answer_tokens(body: dict[str, Any]) -> int:
    """Output tokens of an answer: its content blocks' text and tool input, by size."""
    chars = 0
    for block in body.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            chars += len(block["text"])
        if "input" in block:
            chars += len(json.dumps(block["input"], ensure_ascii=False))
    return max(1, _tokens(chars))


class PromptCache:
    """Prefix hashes -> last write or read (server clock); 5-minute lifetime, refreshed by reads."""

    def __init__(self, clock: Callable[[], float], min_tokens: int) -> None:
        self.clock = clock
        self.min_tokens = min_tokens
        self.entries: dict[str, float] = {}

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        blocks = request_blocks(body)
        total = sum(tokens for _, tokens, _ in blocks)
        now = self.clock()
        digest = hashlib.sha256(str(body.get("model")).encode())
        prefixes: list[tuple[str, int]] = []  # (hash, tokens) at each marked block
        running = 0
        for text, tokens, marked in blocks:
            digest.update(b"\x00" + text.encode("utf-8", "surrogatepass"))
            running += tokens
            if marked and running >= self.min_tokens:
                prefixes.append((digest.hexdigest(), running))
        read = 0
        for key, tokens in reversed(prefixes):  # the longest prefix still alive is read
            seen = self.entries.get(key)
            if seen is not None and now - seen < CACHE_TTL_S:
                read = tokens
                break
        write = prefixes[-1][1] - read if prefixes else 0
        for key, _ in prefixes:
            self.entries[key] = now
        return {
            "input_tokens": total - read - write,
            "output_tokens": 0,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }


# ---------------------------------------------------------------- the server


def _error(status: int, error_type: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return web.json_response(body, status=status, headers={"request-id": "req_fake"})


class FakeAnthropic:
    """``async with FakeAnthropic() as server``: ``server.base_url``, ``push``, ``requests``.

    ``api_key``: when set, the only credential accepted. ``clock``: seconds, for the prompt
    cache's lifetime (tests may replace it to age the cache).
    """

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], ScriptedReply] | None = None,
        *,
        api_key: str | None = None,
        clock: Callable[[], float] | None = None,
        cache_min_tokens: int = CACHE_MIN_TOKENS,
    ) -> None:
        # ``responder`` answers (from the request body) once the scripted replies are used up
        self.responder = responder
        self.api_key = api_key
        self.replies: list[ScriptedReply] = []
        self.requests: list[ReceivedRequest] = []
        self.clock: Callable[[], float] = clock or time.monotonic
        self.cache = PromptCache(lambda: self.clock(), cache_min_tokens)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def push(self, *replies: ScriptedReply) -> None:
        self.replies.extend(replies)

    def _auth_error(self, headers: dict[str, str]) -> web.Response | None:
        key = headers.get("x-api-key", "").strip()
        bearer = headers.get("authorization", "")
        token = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        given = key or token
        if not given:
            return _error(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and given != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version", "").strip():
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(400, "invalid_request_error", "content-type must be application/json")
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw_bytes = await request.read()
        raw = raw_bytes.decode("utf-8", errors="replace")
        try:
            body = json.loads(raw_bytes)
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}  # names lower-cased
        received = ReceivedRequest(
            request.path, headers, raw, body if isinstance(body, dict) else {}
        )
        self.requests.append(received)
        rejected = self._auth_error(headers)
        if rejected is None:
            try:
                validate_request(body)
            except _Invalid as exc:
                rejected = _error(400, "invalid_request_error", str(exc))
        if rejected is not None:
            received.status = rejected.status
            return rejected
        if self.replies:
            reply = self.replies.pop(0)
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            reply = error_reply(500, "api_error", "fake server: no scripted reply left")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        payload = reply.body
        if isinstance(payload, dict):
            payload = dict(payload)
            if reply.auto_usage and payload.get("type") == "message" and "usage" not in payload:
                usage = self.cache.usage(body)
                usage["output_tokens"] = answer_tokens(payload)
                payload["usage"] = usage
            for key in reply.drop:
                payload.pop(key, None)
            usage = payload.get("usage")
            received.usage = dict(usage) if isinstance(usage, dict) else None
        received.status = reply.status
        text = payload if isinstance(payload, str) else json.dumps(payload or {})
        resp_headers = {"request-id": "req_fake", **reply.headers}
        if reply.trickle_s <= 0:
            return web.Response(
                status=reply.status,
                body=text.encode("utf-8", "surrogatepass"),
                content_type=reply.content_type,
                headers=resp_headers,
            )
        resp = web.StreamResponse(status=reply.status, headers=resp_headers)
        resp.content_type = reply.content_type
        await resp.prepare(request)
        data = text.encode("utf-8", "surrogatepass")
        step = max(1, math.ceil(len(data) / max(1, reply.chunks)))
        for start in range(0, len(data), step):
            await asyncio.sleep(reply.trickle_s)
            await resp.write(data[start : start + step])
        await resp.write_eof()
        return resp

    async def start(self) -> str:
        app = web.Application(client_max_size=8 * 1024 * 1024)
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
