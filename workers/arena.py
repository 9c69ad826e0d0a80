"""Agent vs agent (issue 15): several accounts on one listener feed, each with its own decider.

An arena is a name and a list of agents. Every agent is an account of its own
(``<arena>-<agent>``: its own DecisionWorkflow, PositionWorkflows, paper broker file and trading
task queue), and every agent trades the same symbols with the same costs and limits: the
environment's settings plus the arena's shared ``settings``. Only the decider differs:

* ``rule``: the rule policy (as any account without an LLM);
* ``claude:<model>[:<prompt-file>]``: Claude with that model, the prompt file's text appended
  to its system prompt (one constant prefix per agent: the prompt cache works); the rule
  policy decides for it when the LLM cannot (budget, breaker), as for any account;
* ``family:<name>[:<param>=<value>...]``: a policy family of ``trading/policies`` on the
  listener's daily bars (``trading/policies/live.py``).

Any agent spec takes ``:name=<name>`` to name its account, and ``:keys=<PREFIX>`` to trade its
own exchange account (testnet or live): its key and secret are read from the environment
variables ``<PREFIX>_API_KEY`` and ``<PREFIX>_SECRET_KEY`` (optional ``<PREFIX>_SPOT_URL`` /
``<PREFIX>_FUTURES_URL``: another endpoint for it) when its worker starts; only the prefix is
written anywhere. Agents on an exchange each need their own account: two on one would merge
their positions (one position per symbol) and see each other's orders as strangers, so an
arena of several agents on testnet or live is refused unless every agent has its own keys.

The definition is written to ``OCW_HOME/arena.json`` by ``ocw arena start``, which then runs one trading worker per agent in
its process; ``ocw listen --arena`` reads it and wakes every agent's account from one feed (one
gate per account: each agent's own timer and wake conditions). ``ocw arena status`` (and
``ocw status``, the dashboard's arena panel, ``GET /api/arena``) show the leaderboard
(``trading/leaderboard.py``); ``ocw arena stop`` halts every agent and closes its positions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client

from trading.config import SECRET_FIELDS, Settings
from trading.leaderboard import AgentStatus, Leaderboard, leaderboard
from trading.policies.live import parse_policy
from workers.temporal_env import SetupError

log = logging.getLogger(__name__)

ARENA_FILE = "arena.json"
DEFAULT_NAME = "arena"
ACCOUNT_MAX = 40
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
QUERY_TIMEOUT = timedelta(seconds=10)
# settings that make an agent what it is: the arena sets them per agent, never shared
PER_AGENT = {
    "account",
    "policy",
    "llm_enabled",
    "llm_model",
    "llm_prompt_extra",
    "agent",
    "trading_task_queue",
    "paper_broker_path",
    "wake_accounts",
    "home",
}
PROMPT_MAX_CHARS = 8000
KEYS_PATTERN = r"^[A-Z][A-Z0-9_]{0,39}$"
EXCHANGE_MODES = ("testnet", "live")


class AgentSpec(BaseModel):
    kind: Literal["rule", "claude", "family"]
    name: str = Field(min_length=1, max_length=ACCOUNT_MAX, pattern=r"^[A-Za-z0-9_-]+$")
    model: str | None = None  # claude
    prompt_file: str | None = None  # claude: where the extra prompt came from
    prompt_text: str = Field(default="", max_length=PROMPT_MAX_CHARS)
    policy: str = "rule"  # family: the policy text (trading/policies/live.py)
    # testnet / live: the prefix of the environment variables holding this agent's exchange
    # key and secret (never the values: the arena file is not a secret store)
    keys: str | None = Field(default=None, pattern=KEYS_PATTERN)

    def label(self) -> str:
        if self.kind == "claude":
            extra = f" + {Path(self.prompt_file).name}" if self.prompt_file else ""
            return f"claude {self.model}{extra}"
        return self.policy if self.kind == "family" else "rule"

    def identity(self) -> dict[str, Any]:
        """What makes two definitions the same agent (the prompt by its hash)."""
        sha = hashlib.sha256(self.prompt_text.encode()).hexdigest()[:16] if self.prompt_text else ""
        return {"kind": self.kind, "name": self.name, "model": self.model, "policy": self.policy,
                "prompt": sha, "keys": self.keys}  # fmt: skip


class ArenaSpec(BaseModel):
    name: str = Field(
        default=DEFAULT_NAME, min_length=1, max_length=24, pattern=r"^[A-Za-z0-9_-]+$"
    )
    agents: list[AgentSpec] = Field(min_length=1, max_length=20)
    settings: dict[str, Any] = Field(default_factory=dict)  # shared by every agent
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at_ms is None

    def account(self, agent: AgentSpec) -> str:
        return f"{self.name}-{agent.name}"

    def accounts(self) -> list[str]:
        return [self.account(a) for a in self.agents]

    def same_agents(self, other: ArenaSpec) -> bool:
        return self.name == other.name and [a.identity() for a in self.agents] == [
            a.identity() for a in other.agents
        ]


# ------------------------------------------------------------ parsing


def _default_name(kind: str, model: str | None, policy: str, prompt: str | None) -> str:
    if kind == "rule":
        return "rule"
    if kind == "family":
        return policy.split(":")[1].replace("_", "-")
    # claude-sonnet-4-6 -> claude-sonnet; a prompt file adds its stem
    words = (model or "claude").split("-")
    base = "-".join(words[:2]) if words[0] == "claude" and len(words) > 1 else words[0]
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(prompt).stem) if prompt else ""
    return f"{base}-{stem}" if stem else base


def _read_prompt(path: str, base_dir: Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise SetupError(f"prompt file not found: {p}")
    text = p.read_text(encoding="utf-8").strip()
    if len(text) > PROMPT_MAX_CHARS:
        raise SetupError(f"prompt file {p}: {len(text)} characters, at most {PROMPT_MAX_CHARS}")
    return text


def parse_agent(
    text: str, default_model: str = "claude-sonnet-4-6", base_dir: Path | None = None
) -> AgentSpec:
    """One agent from ``rule`` | ``claude[:<model>[:<prompt-file>]]`` |
    ``family:<name>[:<param>=<value>...]``, each with an optional ``:name=<name>``."""
    raw = text.strip()
    if not raw:
        raise SetupError("an empty agent spec")
    kind, *fields = raw.split(":")
    kind = kind.strip().lower()
    name = keys = None
    rest: list[str] = []
    for f in fields:
        if f.startswith("name="):
            name = f[len("name=") :].strip()
        elif f.startswith("keys="):
            keys = f[len("keys=") :].strip()
            if not re.match(KEYS_PATTERN, keys):
                raise SetupError(
                    f"agent {raw!r}: keys={keys!r} must be an environment variable prefix "
                    "(capital letters, digits, '_'; e.g. keys=ARENA_RULE)"
                )
        else:
            rest.append(f)
    model = prompt = None
    policy = "rule"
    if kind == "rule":
        if rest:
            raise SetupError(f"agent {raw!r}: rule takes no arguments (only :name=<name>)")
    elif kind == "claude":
        if len(rest) > 2:
            raise SetupError(f"agent {raw!r}: claude[:<model>[:<prompt-file>]]")
        model = (rest[0].strip() if rest else "") or default_model
        prompt = rest[1].strip() if len(rest) > 1 and rest[1].strip() else None
        if prompt and prompt.startswith("prompt="):
            prompt = prompt[len("prompt=") :]
    elif kind == "family":
        if not rest:
            raise SetupError(f"agent {raw!r}: family:<name>[:<param>=<value>...]")
        try:
            policy = parse_policy("family:" + ":".join(rest)).text()
        except ValueError as err:
            raise SetupError(f"agent {raw!r}: {err}") from None
    else:
        raise SetupError(
            f"agent {raw!r}: unknown kind {kind!r}; use rule, claude[:<model>[:<prompt-file>]] "
            "or family:<name>[:<param>=<value>...]"
        )
    prompt_text = _read_prompt(prompt, base_dir) if prompt else ""
    name = name or _default_name(kind, model, policy, prompt)
    try:
        return AgentSpec(
            kind=kind,  # type: ignore[arg-type]
            name=name,
            model=model,
            prompt_file=prompt,
            prompt_text=prompt_text,
            policy=policy,
            keys=keys,
        )
    except ValidationError as err:
        raise SetupError(f"agent {raw!r}: {err.errors()[0]['msg']} ({name!r})") from None


def split_agents(texts: list[str]) -> list[str]:
    """``--agents a,b --agent c`` as one list (commas separate agents)."""
    return [part.strip() for t in texts for part in t.split(",") if part.strip()]


def _agent_from_table(item: dict[str, Any], default_model: str, base_dir: Path) -> AgentSpec:
    """An ``[[agents]]`` table of an arena file: ``spec = "<cli spec>"`` or its fields."""
    if "spec" in item:
        spec = str(item["spec"])
        for field_name in ("name", "keys"):
            if field_name in item:
                spec += f":{field_name}={item[field_name]}"
        return parse_agent(spec, default_model, base_dir)
    kind = str(item.get("kind", "")).lower()
    parts = [kind]
    if kind == "claude":
        parts.append(str(item.get("model") or default_model))
        if item.get("prompt_file"):
            parts.append(str(item["prompt_file"]))
    elif kind == "family":
        parts.append(str(item.get("family", "")))
        for key, value in (item.get("params") or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{key}={text}")
    unknown = set(item) - {"kind", "name", "model", "prompt_file", "family", "params", "keys"}
    if unknown:
        raise SetupError(f"arena file: agent {item}: unknown field(s) {', '.join(sorted(unknown))}")
    if "name" in item:
        parts.append(f"name={item['name']}")
    if "keys" in item:
        parts.append(f"keys={item['keys']}")
    return parse_agent(":".join(parts), default_model, base_dir)


def check_shared(settings: dict[str, Any]) -> dict[str, Any]:
    """The arena's shared settings: known, not per agent, not secret."""
    known = set(Settings.model_fields)
    for key in settings:
        if key not in known:
            raise SetupError(f"arena settings: unknown setting {key!r} (a Settings field name)")
        if key in PER_AGENT:
            raise SetupError(f"arena settings: {key} is set per agent by the arena")
        if key in SECRET_FIELDS:
            raise SetupError(f"arena settings: {key} is a secret: keep it in the environment")
    return dict(settings)


def build_arena(
    agents: list[str],
    name: str = DEFAULT_NAME,
    shared: dict[str, Any] | None = None,
    default_model: str = "claude-sonnet-4-6",
    base_dir: Path | None = None,
) -> ArenaSpec:
    specs = [parse_agent(a, default_model, base_dir) for a in agents]
    return _finish(name, specs, shared or {})


def load_arena_file(path: Path, default_model: str = "claude-sonnet-4-6") -> ArenaSpec:
    """An arena from a TOML or JSON file (``name``, ``[settings]``, ``[[agents]]``)."""
    if not path.is_file():
        raise SetupError(f"arena file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise SetupError(f"arena file {path}: {err}") from None
    unknown = set(data) - {"name", "settings", "agents"}
    if unknown:
        raise SetupError(f"arena file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    items = data.get("agents") or []
    if not isinstance(items, list) or not items:
        raise SetupError(f"arena file {path}: no [[agents]]")
    specs = [
        parse_agent(i, default_model, path.parent)
        if isinstance(i, str)
        else _agent_from_table(dict(i), default_model, path.parent)
        for i in items
    ]
    return _finish(str(data.get("name") or DEFAULT_NAME), specs, dict(data.get("settings") or {}))


def _finish(name: str, specs: list[AgentSpec], shared: dict[str, Any]) -> ArenaSpec:
    if not specs:
        raise SetupError("an arena needs at least one agent (--agents rule,claude:<model>,...)")
    seen: dict[str, int] = {}
    named: list[AgentSpec] = []
    for spec in specs:  # two agents of one kind: -2, -3, ...
        n = seen.get(spec.name, 0) + 1
        seen[spec.name] = n
        named.append(spec if n == 1 else spec.model_copy(update={"name": f"{spec.name}-{n}"}))
    try:
        arena = ArenaSpec(name=name, agents=named, settings=check_shared(shared))
    except ValidationError as err:
        raise SetupError(f"arena {name!r}: {err.errors()[0]['msg']}") from None
    for agent in arena.agents:
        account = arena.account(agent)
        if len(account) > ACCOUNT_MAX or not _NAME.match(account):
            raise SetupError(
                f"agent {agent.name!r}: account {account!r} must be at most {ACCOUNT_MAX} "
                "letters, digits, '-' or '_' (shorten it with :name=<name>)"
            )
    return arena


# ------------------------------------------------------------ the arena file


def arena_path(settings: Settings) -> Path:
    return settings.home / ARENA_FILE


def read_arena(settings: Settings) -> ArenaSpec | None:
    path = arena_path(settings)
    if not path.is_file():
        return None
    try:
        return ArenaSpec.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise SetupError(f"{path}: not an arena definition ({err.errors()[0]['msg']})") from None


def write_arena(settings: Settings, arena: ArenaSpec) -> Path:
    path = arena_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(arena.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def shared_settings(base: Settings, arena: ArenaSpec) -> Settings:
    """The environment's settings with the arena's shared ones over them."""
    from workers.cli import load_settings

    return load_settings({**_explicit(base), **arena.settings}) if arena.settings else base


def _explicit(base: Settings) -> dict[str, Any]:
    return {k: getattr(base, k) for k in base.model_fields_set}


def agent_credentials(agent: AgentSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    """The agent's exchange key, secret and endpoints from ``<keys>_*`` variables; {} without
    ``keys``. A missing key or secret is refused by name (never by value)."""
    if agent.keys is None:
        return {}
    key, secret = environ.get(f"{agent.keys}_API_KEY"), environ.get(f"{agent.keys}_SECRET_KEY")
    missing = [
        n
        for n, v in ((f"{agent.keys}_API_KEY", key), (f"{agent.keys}_SECRET_KEY", secret))
        if not v
    ]
    if missing:
        raise SetupError(
            f"agent {agent.name!r} trades with keys={agent.keys}: set {' and '.join(missing)} "
            "in the environment"
        )
    out: dict[str, Any] = {"binance_api_key": key, "binance_api_secret": secret}
    for suffix, name in (("SPOT_URL", "binance_spot_url"), ("FUTURES_URL", "binance_futures_url")):
        url = environ.get(f"{agent.keys}_{suffix}")
        if url:
            out[name] = url
    return out


def check_exchange_accounts(
    base: Settings, arena: ArenaSpec, environ: Mapping[str, str] | None = None
) -> None:
    """Refuse an arena whose agents would share one exchange account (testnet / live):
    several agents need keys each, and no two the same key."""
    mode = shared_settings(base, arena).mode
    if mode not in EXCHANGE_MODES or len(arena.agents) < 2:
        return
    env = os.environ if environ is None else environ
    without = [a.name for a in arena.agents if a.keys is None]
    if without:
        raise SetupError(
            f"OCW_MODE={mode}: agents {', '.join(without)} have no exchange account of their "
            "own: give every agent :keys=<PREFIX> (its key in <PREFIX>_API_KEY and "
            "<PREFIX>_SECRET_KEY); agents on one account would merge their positions"
        )
    owners: dict[str, str] = {}
    for agent in arena.agents:
        key = str(agent_credentials(agent, env)["binance_api_key"])
        if key in owners:
            raise SetupError(
                f"OCW_MODE={mode}: agents {owners[key]} and {agent.name} have the same API key "
                f"({owners[key]}'s and {agent.name}'s keys= variables): each agent needs an "
                "exchange account of its own"
            )
        owners[key] = agent.name


def agent_settings(
    base: Settings,
    arena: ArenaSpec,
    agent: AgentSpec,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """One agent's settings: the shared ones, and what makes it this agent; with ``environ``
    (the worker that trades for it) its own exchange credentials too (``agent_credentials``)."""
    from workers.cli import load_settings

    shared = shared_settings(base, arena)
    account = arena.account(agent)
    per_agent: dict[str, Any] = {
        "account": account,
        "trading_task_queue": f"{shared.trading_task_queue}-{account}",
        "paper_broker_path": shared.home / "arena" / f"{account}.db",
        "policy": agent.policy if agent.kind == "family" else "rule",
        "llm_enabled": agent.kind == "claude",
        "agent": agent.label(),
        "llm_prompt_extra": agent.prompt_text if agent.kind == "claude" else "",
        "wake_accounts": [],
    }
    if agent.kind == "claude":
        per_agent["llm_model"] = agent.model
    if environ is not None:
        per_agent.update(agent_credentials(agent, environ))
    return load_settings({**_explicit(base), **arena.settings, **per_agent})


def listener_settings(base: Settings, arena: ArenaSpec) -> dict[str, Any]:
    """The overrides that make one listener wake every agent of the arena."""
    first = agent_settings(base, arena, arena.agents[0])
    return {
        **arena.settings,
        "account": first.account,
        "trading_task_queue": first.trading_task_queue,  # the worker watch's queue
        "wake_accounts": arena.accounts()[1:],
    }


# ------------------------------------------------------------ running


async def run_arena(base: Settings, arena: ArenaSpec, stop: asyncio.Event) -> None:
    """One trading worker per agent in this process; any of them failing stops them all."""
    from activities.llm_agent import llm_configured
    from workers.trading_worker import run_trading_worker

    check_exchange_accounts(base, arena)
    every = [agent_settings(base, arena, a, os.environ) for a in arena.agents]
    claude = [a.name for a in arena.agents if a.kind == "claude"]
    if claude and not llm_configured():
        raise SetupError(
            f"claude agent(s) {', '.join(claude)} need ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL "
            "with ANTHROPIC_AUTH_TOKEN) in the environment"
        )
    for s in every:
        s.paths()["broker_db"].parent.mkdir(parents=True, exist_ok=True)
    inner = asyncio.Event()
    tasks = [
        asyncio.create_task(run_trading_worker(s, inner), name=f"worker {s.account}") for s in every
    ]
    watcher = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        inner.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        watcher.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def resume_agents(client: Client, arena: ArenaSpec, attempts: int = 60) -> list[str]:
    """Lift the halt ``ocw arena stop`` left on every agent (once their workers serve them)."""
    from workers.account import warm_update
    from workflows.decision import ControlRequest, DecisionWorkflow

    out = []
    for account in arena.accounts():
        handle = client.get_workflow_handle(f"ocw-decision-{account}")
        for _ in range(attempts):
            try:
                out.append(
                    await warm_update(
                        handle, DecisionWorkflow.resume_update, ControlRequest(reason="arena start")
                    )
                )
                break
            except Exception:  # noqa: BLE001 - not served yet
                await asyncio.sleep(0.5)
    return out


async def agent_statuses(client: Client, arena: ArenaSpec) -> list[AgentStatus]:
    from workflows.decision import DecisionWorkflow

    async def one(agent: AgentSpec) -> AgentStatus:
        account = arena.account(agent)
        handle = client.get_workflow_handle(f"ocw-decision-{account}")
        try:
            view = await handle.query(DecisionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - the board says it
            return AgentStatus(agent.name, account, agent.label(), error=_short(err))
        return AgentStatus(agent.name, account, agent.label(), view=view)

    return list(await asyncio.gather(*(one(a) for a in arena.agents)))


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "not found" in text.lower():
        return "not started (is `ocw arena start` running?)"
    return f"unavailable: {text[:120]}"


async def arena_board(client: Client, arena: ArenaSpec) -> Leaderboard:
    return leaderboard(arena.name, await agent_statuses(client, arena), running=arena.running)


async def stop_arena(
    client: Client, settings: Settings, arena: ArenaSpec, close: bool = True, wait_s: float = 60
) -> list[str]:
    """Halt every agent (no new entries), close its positions unless told not to, wait for
    them to be flat, and mark the arena stopped."""
    from workers.account import warm_update
    from workflows.decision import ControlRequest, DecisionWorkflow

    lines = []
    reason = f"arena {arena.name} stopped"
    for account in arena.accounts():
        handle = client.get_workflow_handle(f"ocw-decision-{account}")
        try:
            lines.append(
                f"{account}: "
                + await warm_update(
                    handle, DecisionWorkflow.halt_update, ControlRequest(reason=reason)
                )
            )
            if close:
                lines.append(
                    f"{account}: "
                    + await warm_update(
                        handle, DecisionWorkflow.close_all_update, ControlRequest(reason=reason)
                    )
                )
        except Exception as err:  # noqa: BLE001 - said per agent
            lines.append(f"{account}: not stopped ({_short(err)})")
    if close:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            statuses = await agent_statuses(client, arena)
            if all(s.view is None or not s.view.positions for s in statuses):
                break
            await asyncio.sleep(0.5)
    write_arena(settings, arena.model_copy(update={"stopped_at_ms": int(time.time() * 1000)}))
    return lines


async def arena_json(client: Client, settings: Settings) -> dict[str, Any]:
    """``GET /api/arena``: the leaderboard of the arena defined under OCW_HOME, or nothing."""
    arena = read_arena(settings)
    if arena is None:
        return {"arena": None}
    board = await arena_board(client, arena)
    agents = [
        {"name": a.name, "account": arena.account(a), "decider": a.label(), "kind": a.kind}
        for a in arena.agents
    ]
    return {"arena": board.model_dump(mode="json"), "agents": agents}


def describe(arena: ArenaSpec) -> list[str]:
    lines = [f"arena {arena.name}: {len(arena.agents)} agents on one feed"]
    for agent in arena.agents:
        own = f"  (exchange account: {agent.keys}_API_KEY)" if agent.keys else ""
        lines.append(f"  {arena.account(agent):<28} {agent.label()}{own}")
    if arena.settings:
        shared = ", ".join(f"{k}={v}" for k, v in sorted(arena.settings.items()))
        lines.append(f"  shared: {shared}")
    return lines
