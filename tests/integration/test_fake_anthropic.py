"""The local Messages API stand-in is as strict as the real one where the engine could slip.

Raw HTTP (httpx) here, to send what the ``anthropic`` client never would; the LLM activity
tests drive it with the real client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.servers.fake_anthropic import (
    FakeAnthropic,
    ScriptedReply,
    html_reply,
    text_reply,
    tool_reply,
)

KEY = "fake-test-key-strict-server"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
LONG_SYSTEM = "You are a careful trader. " * 200  # ~5,000 characters, above the cache minimum


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as srv:
        yield srv


async def post(
    server: FakeAnthropic, payload: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{server.base_url}/v1/messages",
            content=content,
            headers=HEADERS if headers is None else headers,
        )


@pytest.mark.parametrize(
    "headers,status,error_type",
    [
        ({}, 401, "authentication_error"),
        ({**HEADERS, "x-api-key": ""}, 401, "authentication_error"),
        ({**HEADERS, "x-api-key": "fake-other-key"}, 401, "authentication_error"),
        (
            {k: v for k, v in HEADERS.items() if k != "anthropic-version"},
            400,
            "invalid_request_error",
        ),
        ({**HEADERS, "content-type": "text/plain"}, 400, "invalid_request_error"),
    ],
)
async def test_headers_are_checked(server, headers, status, error_type) -> None:
    server.push(text_reply("never sent"))
    resp = await post(server, body(), headers)
    assert resp.status_code == status
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == error_type
    assert len(server.replies) == 1  # a rejected request takes no scripted reply
    assert server.requests[-1].status == status


async def test_a_bearer_token_is_a_credential(server) -> None:
    server.push(text_reply("ok"))
    headers = {k: v for k, v in HEADERS.items() if k != "x-api-key"}
    resp = await post(server, body(), {**headers, "authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200 and resp.json()["content"][0]["text"] == "ok"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1]",
        body(model=None),
        body(model=""),
        body(max_tokens=0),
        body(max_tokens="100"),
        body(max_tokens=True),
        body(messages=[]),
        body(messages=[{"role": "system", "content": "x"}]),
        body(messages=[{"role": "user", "content": ""}]),
        body(messages=[{"role": "user", "content": [{"text": "no type"}]}]),
        body(messages=[{"role": "assistant", "content": "first"}]),
        body(temperature=1.5),
        body(system=[{"type": "image"}]),
        body(system=42),
        body(tools=[{"name": "bad name!", "input_schema": {"type": "object"}}]),
        body(tools=[{"name": "t", "input_schema": {"type": "array"}}]),
        body(tool_choice={"type": "tool", "name": "missing"}),
        body(system=[{"type": "text", "text": "s", "cache_control": {"type": "forever"}}]),
        body(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}] * 5),
        body(unknown_field=1),
    ],
)
async def test_malformed_requests_are_400(server, payload) -> None:
    server.push(text_reply("never sent"))
    resp = await post(server, payload)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert len(server.replies) == 1


async def test_usage_follows_the_request_and_the_answer(server) -> None:
    server.push(text_reply("short"), text_reply("a much longer answer " * 50))
    small = (await post(server, body())).json()["usage"]
    big = (await post(server, body(messages=[{"role": "user", "content": "x" * 7000}]))).json()
    assert small["input_tokens"] < 10 and 1900 < big["usage"]["input_tokens"] < 2100
    assert small["output_tokens"] == 2 and big["usage"]["output_tokens"] > 250
    for usage in (small, big["usage"]):
        assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0


async def test_scripted_usage_is_reported_as_scripted(server) -> None:
    server.push(tool_reply("t", {"a": 1}, {"input_tokens": 7, "output_tokens": 3}))
    usage = (await post(server, body())).json()["usage"]
    assert usage == {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def test_cache_reads_only_what_was_marked_and_written_within_five_minutes(server) -> None:
    now = [0.0]
    server.clock = lambda: now[0]
    marked = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    plain = [{"type": "text", "text": LONG_SYSTEM}]
    server.push(*[text_reply("ok")] * 6)

    async def usage(system: list[dict[str, Any]], user: str = "hello") -> dict[str, int]:
        payload = body(system=system, messages=[{"role": "user", "content": user}])
        return (await post(server, payload)).json()["usage"]

    assert (await usage(plain))["cache_creation_input_tokens"] == 0  # nothing marked
    first = await usage(marked)
    assert first["cache_creation_input_tokens"] > 1024 and first["cache_read_input_tokens"] == 0
    now[0] = 200.0
    second = await usage(marked, "a different question")  # the prefix is the same
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0
    now[0] = 200.0 + 299
    assert (await usage(marked))["cache_read_input_tokens"] > 0  # the read refreshed it
    now[0] = 200.0 + 299 + 301
    assert (await usage(marked))["cache_creation_input_tokens"] > 0  # expired: written again
    other = [{**marked[0], "text": LONG_SYSTEM + "!"}]
    assert (await usage(other))["cache_read_input_tokens"] == 0  # another prefix


async def test_a_short_prefix_is_never_cached(server) -> None:
    server.push(*[text_reply("ok")] * 2)
    short = [{"type": "text", "text": "brief", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        usage = (await post(server, body(system=short))).json()["usage"]
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0


async def test_non_json_bodies_and_missing_fields_can_be_scripted(server) -> None:
    server.push(
        html_reply(200),
        html_reply(502),
        text_reply("hi", drop=("usage",)),
        tool_reply("t", {}, drop=("content",)),
        ScriptedReply(body="{not json"),
    )
    ok_html = await post(server, body())
    assert ok_html.status_code == 200 and ok_html.headers["content-type"].startswith("text/html")
    assert ok_html.text.startswith("<html>")
    assert (await post(server, body())).status_code == 502
    no_usage = (await post(server, body())).json()
    assert "usage" not in no_usage and no_usage["content"][0]["text"] == "hi"
    assert server.requests[-1].usage is None
    no_content = (await post(server, body())).json()
    assert "content" not in no_content and no_content["usage"]["output_tokens"] >= 1
    assert (await post(server, body())).text == "{not json"


async def test_an_empty_script_answers_500(server) -> None:
    resp = await post(server, body())
    assert resp.status_code == 500 and "no scripted reply left" in resp.text
