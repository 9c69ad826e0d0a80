"""Local stand-ins for the alert destinations: Telegram's Bot API and a generic webhook.

``FakeTelegram`` answers ``/bot<token>/<method>`` like ``api.telegram.org`` for ``sendMessage``
(and ``getMe``), as strictly as the engine could get it wrong:

* the path: ``/bot<token>/<method>``; another token is 401 ``Unauthorized``; a path that is not
  a bot method, or a method it does not know, is 404 ``Not Found``. Every answer is Telegram's
  envelope: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
  "description": "..."}``;
* parameters from a JSON body (``application/json``: a JSON object or 400), a form
  (``application/x-www-form-urlencoded`` or ``multipart/form-data``) and the query string, as
  the Bot API takes them;
* ``chat_id`` required (400 ``Bad Request: chat_id is empty``) and known (400 ``Bad Request: chat
  not found``); ``text`` required and non-empty (400 ``Bad Request: message text is empty``) and
  at most 4096 characters after entity parsing, counted in UTF-16 code units as Telegram does
  (400 ``Bad Request: message is too long``); ``parse_mode`` one of ``HTML``, ``MarkdownV2``,
  ``Markdown`` (400 ``Bad Request: unsupported parse_mode``). ``HTML`` is parsed: only
  Telegram's tags, balanced, and every ``<``, ``>``, ``&`` outside a tag escaped (400 ``Bad
  Request: can't parse entities: ...``). ``MarkdownV2`` is checked loosely (reserved characters
  ``>#+-=|{}.!`` must be escaped); legacy ``Markdown`` is not checked;
* the answer: ``{"ok": true, "result": {"message_id", "from", "chat", "date", "text",
  "entities"?}}`` with the text after entity parsing, as Telegram returns it.

Every request is recorded (``requests``); messages the server accepted are in ``messages``.
Faults for the next requests that reached a method (``fail_next``): ``429`` (with
``parameters.retry_after`` and ``Retry-After``), ``500``, ``hang`` (no answer until the client
gives up or the server stops; nothing sent), ``slow`` (answers normally after ``delay_s``: the
message is sent even if the client gave up) and ``drop`` (the message is accepted and recorded,
then the connection is closed without an answer: a side effect the client cannot see).

``FakeWebhook`` is a small JSON receiver at a secret path that keeps the first delivery of each
``Idempotency-Key`` (later ones are answered 200 and counted as duplicates), with the same faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

TOKEN = "123456789:AAHfakeTOKENforTESTSxxxxxxxxxxxxxxx"
CHAT_ID = "-1001234567890"
MAX_TEXT = 4096
PARSE_MODES = ("HTML", "MarkdownV2", "Markdown")
FaultKind = Literal["429", "500", "hang", "slow", "drop"]

_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",  # only with class="tg-spoiler"
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>"
)
_ATTR = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+)))?")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d{1,7}|#x[0-9a-fA-F]{1,6});")
_MDV2_RESERVED = set(">#+-=|{}.!")
_MDV2_FORMAT = set("*_~`|[]()")


class BadRequest(Exception):
    """400 with this description (``Bad Request: ...``)."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML: the visible text and its entities (offsets in UTF-16 units)."""
    out: list[str] = []
    used = 0  # UTF-16 units of ``out``
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if m is None:
                raise BadRequest(
                    f"Bad Request: can't parse entities: Unexpected start tag at byte offset {i}"
                )
            closing, name, attr_text = m.group(1), m.group(2).lower(), m.group(3)
            if name not in _HTML_TAGS:
                raise BadRequest(
                    f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" '
                    f"at byte offset {i}"
                )
            if closing:
                if not stack or stack[-1][0] != name:
                    want = f'"</{stack[-1][0]}>"' if stack else "nothing"
                    raise BadRequest(
                        f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                        f'{i}, expected {want}, found "</{name}>"'
                    )
                open_name, start, attrs = stack.pop()
                entity: dict[str, Any] = {
                    "type": _HTML_TAGS[open_name],
                    "offset": start,
                    "length": used - start,
                }
                if open_name == "a":
                    entity["url"] = attrs.get("href", "")
                if entity["length"] > 0:
                    entities.append(entity)
            else:
                attrs = {
                    a.group(1).lower(): html.unescape(a.group(2) or a.group(3) or a.group(4) or "")
                    for a in _ATTR.finditer(attr_text)
                }
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise BadRequest(
                        'Bad Request: can\'t parse entities: Tag "span" must have class '
                        '"tg-spoiler"'
                    )
                if name == "a" and not attrs.get("href"):
                    raise BadRequest('Bad Request: can\'t parse entities: Tag "a" needs an href')
                stack.append((name, used, attrs))
            i = m.end()
            continue
        if ch == "&":
            m = _ENTITY.match(text, i)
            if m is None:
                raise BadRequest(
                    "Bad Request: can't parse entities: Character '&' at byte offset "
                    f"{i} must be escaped as &amp;"
                )
            decoded = html.unescape(m.group(0))
            out.append(decoded)
            used += utf16_len(decoded)
            i = m.end()
            continue
        if ch == ">":
            raise BadRequest(
                f"Bad Request: can't parse entities: Character '>' at byte offset {i} "
                "must be escaped as &gt;"
            )
        out.append(ch)
        used += utf16_len(ch)
        i += 1
    if stack:
        raise BadRequest(
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1][0]}"'
        )
    return "".join(out), sorted(entities, key=lambda e: e["offset"])


def parse_markdown_v2(text: str) -> str:
    """A loose MarkdownV2 check: reserved characters escaped; format characters dropped."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch in _MDV2_RESERVED:
            raise BadRequest(
                f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be "
                "escaped with the preceding '\\'"
            )
        if ch not in _MDV2_FORMAT:
            out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class Fault:
    kind: FaultKind
    retry_after: int = 1
    delay_s: float = 0.0


@dataclass
class TelegramRequest:
    method: str  # as asked ("sendMessage"), "" when the path is not a bot method
    http_method: str
    token_ok: bool
    params: dict[str, Any]
    status: int = 0
    description: str = ""
    fault: str = ""


@dataclass
class SentMessage:
    message_id: int
    chat_id: str
    text: str  # after entity parsing, as Telegram shows it
    raw_text: str  # as sent
    parse_mode: str | None
    entities: list[dict[str, Any]]
    params: dict[str, Any]
    date: int


def _envelope_error(status: int, description: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    body.update(extra)
    return web.json_response(body, status=status)


class _LocalServer:
    """Start / stop on 127.0.0.1 and the fault queue both stand-ins share."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    def fail_next(
        self, kind: FaultKind, n: int = 1, *, retry_after: int = 1, delay_s: float = 0.0
    ) -> None:
        """The next ``n`` requests that reach a method answer with this fault."""
        self.faults.extend(Fault(kind, retry_after, delay_s) for _ in range(n))

    def _take_fault(self) -> Fault | None:
        return self.faults.pop(0) if self.faults else None

    async def _hang(self) -> None:
        """Until the client gives up (aiohttp cancels the handler) or the server stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=3600)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without an answer (the side effect already happened)."""
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPException()  # never written: the transport is gone

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None
        )  # paths hold the token
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeTelegram(_LocalServer):
    """``async with FakeTelegram() as tg``: ``tg.base_url`` (the ``telegram_api_url``),
    ``tg.messages``, ``tg.requests``, ``tg.fail_next(...)``.

    ``chats``: chat id -> chat type (``private``, ``group``, ``supergroup``, ``channel``); a chat
    not in it is "chat not found".
    """

    def __init__(self, token: str = TOKEN, chats: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.chats = {CHAT_ID: "supergroup"} if chats is None else dict(chats)
        self.requests: list[TelegramRequest] = []
        self.messages: list[SentMessage] = []
        self._ids = itertools.count(1)
        self.bot_id = int(token.split(":")[0]) if token.split(":")[0].isdigit() else 1

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        ctype = request.content_type.lower()
        if not request.can_read_body:
            return params
        if ctype == "application/json":
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise BadRequest("Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise BadRequest("Bad Request: JSON object expected")
            params.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            await request.read()  # Telegram ignores a body it cannot read
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"/bot([^/]*)/([A-Za-z_]+)", request.path)
        rec = TelegramRequest(method="", http_method=request.method, token_ok=False, params={})
        self.requests.append(rec)
        if m is None:
            rec.status, rec.description = 404, "Not Found"
            return _envelope_error(404, "Not Found")
        rec.method = m.group(2)
        if m.group(1) != self.token:
            rec.status, rec.description = 401, "Unauthorized"
            return _envelope_error(401, "Unauthorized")
        rec.token_ok = True
        method = rec.method.lower()
        if method not in ("sendmessage", "getme"):
            rec.status, rec.description = 404, "Not Found"
            return _envelope_error(404, "Not Found")
        try:
            rec.params = await self._params(request)
        except BadRequest as exc:
            rec.status, rec.description = 400, str(exc)
            return _envelope_error(400, str(exc))
        fault = self._take_fault()
        if fault is not None and fault.kind != "drop":
            rec.fault = fault.kind
            if fault.kind == "429":
                rec.status = 429
                rec.description = f"Too Many Requests: retry after {fault.retry_after}"
                return web.json_response(
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": rec.description,
                        "parameters": {"retry_after": fault.retry_after},
                    },
                    status=429,
                    headers={"Retry-After": str(fault.retry_after)},
                )
            if fault.kind == "500":
                rec.status, rec.description = 500, "Internal Server Error"
                return _envelope_error(500, "Internal Server Error")
            if fault.kind == "hang":
                await self._hang()
                rec.status, rec.description = 502, "Bad Gateway"
                return _envelope_error(502, "Bad Gateway")
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
        if method == "getme":
            rec.status = 200
            return web.json_response({"ok": True, "result": self._bot()})
        try:
            msg = self._send_message(rec.params)
        except BadRequest as exc:
            rec.status, rec.description = 400, str(exc)
            return _envelope_error(400, str(exc))
        self.messages.append(msg)
        if fault is not None and fault.kind == "drop":
            rec.fault, rec.status = "drop", 0
            return self._drop(request)
        rec.status = 200
        result: dict[str, Any] = {
            "message_id": msg.message_id,
            "from": self._bot(),
            "chat": self._chat(msg.chat_id),
            "date": msg.date,
            "text": msg.text,
        }
        if msg.entities:
            result["entities"] = msg.entities
        return web.json_response({"ok": True, "result": result})

    def _bot(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "OCW test", "username": "ocw_bot"}

    def _chat(self, chat_id: str) -> dict[str, Any]:
        kind = self.chats[chat_id]
        ident: int | str = int(chat_id) if re.fullmatch(r"-?\d+", chat_id) else chat_id
        chat: dict[str, Any] = {"id": ident, "type": kind}
        if kind == "private":
            chat["first_name"] = "Trader"
        else:
            chat["title"] = "OCW alerts"
        return chat

    def _send_message(self, params: dict[str, Any]) -> SentMessage:
        chat = params.get("chat_id")
        if chat is None or (isinstance(chat, str) and not chat.strip()):
            raise BadRequest("Bad Request: chat_id is empty")
        if isinstance(chat, bool) or not isinstance(chat, int | str):
            raise BadRequest("Bad Request: chat_id must be an Integer or a String")
        chat_id = str(chat).strip()
        if chat_id not in self.chats:
            raise BadRequest("Bad Request: chat not found")
        raw = params.get("text")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise BadRequest("Bad Request: message text is empty")
        if not isinstance(raw, str):
            raise BadRequest('Bad Request: field "text" must be of type String')
        parse_mode = params.get("parse_mode")
        entities: list[dict[str, Any]] = []
        if parse_mode in (None, ""):
            text = raw
            parse_mode = None
        elif parse_mode == "HTML":
            text, entities = parse_html(raw)
        elif parse_mode == "MarkdownV2":
            text = parse_markdown_v2(raw)
        elif parse_mode == "Markdown":
            text = re.sub(r"[*_`\[]", "", raw)
        else:
            raise BadRequest("Bad Request: unsupported parse_mode")
        for flag in ("disable_web_page_preview", "disable_notification", "protect_content"):
            value = params.get(flag)
            if value is not None and not isinstance(value, bool) and value not in ("true", "false"):
                raise BadRequest(f'Bad Request: field "{flag}" must be of type Boolean')
        if not text.strip():
            raise BadRequest("Bad Request: message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise BadRequest("Bad Request: message is too long")
        return SentMessage(
            message_id=next(self._ids),
            chat_id=chat_id,
            text=text,
            raw_text=raw,
            parse_mode=parse_mode,
            entities=entities,
            params=params,
            date=int(time.time()),
        )


# ---------------------------------------------------------------- a generic webhook


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: str
    body: dict[str, Any] | None
    status: int = 0
    fault: str = ""


@dataclass
class FakeWebhookState:
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> first body
    duplicates: int = 0


class FakeWebhook(_LocalServer):
    """``async with FakeWebhook() as hook``: ``hook.url`` (a secret path, like a Slack or
    ntfy hook), ``hook.requests``, ``hook.deliveries`` (first body per Idempotency-Key)."""

    def __init__(self, require_key: bool = True) -> None:
        super().__init__()
        self.path = f"/hooks/{secrets.token_hex(12)}"
        self.require_key = require_key
        self.requests: list[WebhookRequest] = []
        self.state = FakeWebhookState()

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    @property
    def deliveries(self) -> dict[str, dict[str, Any]]:
        return self.state.deliveries

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_bytes = await request.read()
        raw = raw_bytes.decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = WebhookRequest(request.path, headers, raw, None)
        self.requests.append(rec)
        if request.path != self.path:
            rec.status = 404
            return web.json_response({"error": "not found"}, status=404)
        if request.method != "POST":
            rec.status = 405
            return web.json_response({"error": "POST only"}, status=405)
        if request.content_type.lower() != "application/json":
            rec.status = 415
            return web.json_response({"error": "application/json only"}, status=415)
        try:
            body = json.loads(raw_bytes)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            rec.status = 400
            return web.json_response({"error": "a JSON object is expected"}, status=400)
        rec.body = body
        key = headers.get("idempotency-key", "")
        if self.require_key and not key:
            rec.status = 400
            return web.json_response({"error": "Idempotency-Key header required"}, status=400)
        fault = self._take_fault()
        if fault is not None and fault.kind != "drop":
            rec.fault = fault.kind
            if fault.kind == "429":
                rec.status = 429
                return web.json_response(
                    {"error": "slow down"},
                    status=429,
                    headers={"Retry-After": str(fault.retry_after)},
                )
            if fault.kind == "500":
                rec.status = 500
                return web.json_response({"error": "internal"}, status=500)
            if fault.kind == "hang":
                await self._hang()
                rec.status = 502
                return web.json_response({"error": "gateway"}, status=502)
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
        duplicate = key in self.state.deliveries
        if duplicate:
            self.state.duplicates += 1
        else:
            self.state.deliveries[key] = body
        if fault is not None and fault.kind == "drop":
            rec.fault = "drop"
            return self._drop(request)
        rec.status = 200
        return web.json_response({"ok": True, "duplicate": duplicate})
