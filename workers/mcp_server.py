"""``ocw mcp``: the engine's read-only views as an MCP server (the official MCP Python SDK).

Claude Desktop, Claude Code or any MCP client asks the engine what it holds and why: the same
views as the dashboard and the REST API (``workers/views.py``, Temporal queries and the journal
read afresh on every call), as tools returning structured JSON and as ``ocw://...`` resources.

Transports: stdio (the default, what Claude Desktop launches) and streamable HTTP
(``ocw mcp --http [--port N]``, bound to 127.0.0.1, endpoint ``/mcp``).

Control tools (halt, resume, close_all, wake) exist only when ``OCW_MCP_CONTROL=true``, and
then each asks for a confirmation: through MCP elicitation (the client shows the user a
yes/no form) when the client supports it, otherwise by requiring ``confirm: true`` in the call
(which the client's own tool-approval prompt shows to the user).

Errors (Temporal unreachable, no account, no worker answering) come back as one clear line in
an ``isError`` tool result (or a resource read error), never a traceback.
"""

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Annotated, Any, TypeVar

import pydantic_core
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    RPCError,
    RPCTimeoutOrCancelledError,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCStatusCode

from activities.db import DB_ERRORS, DatabaseUnavailable, describe
from activities.journal import Journal
from trading.config import Settings
from trading.learner import PosteriorTable
from trading.models import ClosedTrade, Wake
from workers.account import warm_update
from workers.temporal_env import SetupError, connect, ensure_can_listen
from workers.views import DecisionView, MetricsView, Overview, PositionView, RegimeInfo, Views
from workflows.decision import ControlRequest, DecisionWorkflow

log = logging.getLogger("ocw.mcp")

HOST = "127.0.0.1"
DEFAULT_PORT = 8766  # the REST API / dashboard is on 8765
CONTROL_ENV = "OCW_MCP_CONTROL"
VIEW_TIMEOUT_S = 15.0  # a query no worker answers would otherwise hang the client's call

T = TypeVar("T")

INSTRUCTIONS = """\
OCW is a durable crypto trading engine running on Temporal. These tools read its live state:
start with `overview` (equity, positions with stops and PnL, halts, regimes, health), then
`decisions` for why it traded, `trades` and `metrics` for how it has done, `incidents` for what
went wrong. Amounts are in the quote currency (USDT); times are Unix epoch milliseconds (UTC).
Every read is fresh from the engine; nothing is cached."""


def control_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``OCW_MCP_CONTROL`` enables the control tools (off unless set to true)."""
    return env.get(CONTROL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------ results


class PositionsResult(BaseModel):
    account: str
    positions: list[PositionView]


class DecisionsResult(BaseModel):
    account: str
    decisions: list[DecisionView]  # oldest first, the latest last


class TradesResult(BaseModel):
    account: str
    trades: list[ClosedTrade]  # oldest first


class RegimesResult(BaseModel):
    account: str
    regimes: RegimeInfo | None  # None until the engine has classified the market


class IncidentsResult(BaseModel):
    account: str
    incidents: list[dict[str, Any]]  # journal rows, oldest first


class ControlAnswer(BaseModel):
    ok: bool
    action: str
    workflow_id: str
    answer: str


class Confirmation(BaseModel):
    """The elicitation form of a control tool: one yes/no box."""

    confirm: bool = Field(default=False, title="Confirm", description="Yes, do it")


# ------------------------------------------------------------------ the engine


class EngineError(Exception):
    """A problem reading or steering the engine, as one line for the user."""


class Engine:
    """The Temporal connection (made on first use, so the server starts without Temporal) and
    the account's views; every failure is turned into an :class:`EngineError`."""

    def __init__(
        self, settings: Settings, client: Client | None = None, timeout_s: float = VIEW_TIMEOUT_S
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._client = client
        self._lock = asyncio.Lock()

    @property
    def workflow_id(self) -> str:
        return self.settings.decision_workflow_id

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect(self.settings), self.timeout_s)
                except TimeoutError:
                    raise SetupError(
                        f"cannot reach Temporal at {self.settings.temporal_address} within "
                        f"{self.timeout_s:g} s. Start it with `ocw server` or set "
                        "OCW_TEMPORAL_ADDRESS."
                    ) from None
            return self._client

    async def call(self, what: str, fn: Callable[[Views], Awaitable[T]]) -> T:
        try:
            views = Views(await self.client(), self.settings)
            return await asyncio.wait_for(fn(views), self.timeout_s)
        except SetupError as err:
            raise EngineError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - one clear line, never a traceback
            raise EngineError(self.explain(what, err)) from None

    async def control(self, action: str, fn: Callable[[Any], Awaitable[str]]) -> str:
        """Run ``fn(handle)`` on the account's DecisionWorkflow."""
        try:
            handle = (await self.client()).get_workflow_handle(self.workflow_id)
            return await asyncio.wait_for(fn(handle), self.timeout_s)
        except SetupError as err:
            raise EngineError(str(err)) from None
        except Exception as err:  # noqa: BLE001
            raise EngineError(self.explain(action, err)) from None

    def explain(self, what: str, err: BaseException) -> str:
        s = self.settings
        where = f"{s.temporal_address} (namespace {s.temporal_namespace!r})"
        no_account = (
            f"no running account {s.account!r}: the DecisionWorkflow {self.workflow_id} is not on "
            f"{where}; start it with `ocw account init` or `ocw worker` (or set OCW_ACCOUNT)"
        )
        text = str(err)
        if isinstance(err, TimeoutError | RPCTimeoutOrCancelledError):
            return (
                f"{what}: {self.workflow_id} did not answer within {self.timeout_s:g} s; "
                "is `ocw worker` running?"
            )
        if isinstance(err, WorkflowUpdateFailedError):
            cause = err.cause or err
            return f"{what} refused by {self.workflow_id}: {cause}"
        if isinstance(err, WorkflowQueryFailedError | WorkflowQueryRejectedError):
            if "Workflow Task in failed state" in text:
                return (
                    f"{self.workflow_id} runs but its workflow task keeps failing (see the worker "
                    "log; a non-determinism error is recovered with `temporal workflow reset "
                    "--type LastWorkflowTask`, docs/upgrades.md)"
                )
            return f"{what}: {self.workflow_id} could not answer: {text[:300]}"
        if isinstance(err, RPCError):
            if err.status == RPCStatusCode.NOT_FOUND:
                return no_account
            if err.status == RPCStatusCode.UNAVAILABLE:
                return (
                    f"cannot reach Temporal at {where}: {err.message[:200]}. "
                    "Start it with `ocw server` or set OCW_TEMPORAL_ADDRESS."
                )
            if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                return (
                    f"{what}: {self.workflow_id} did not answer in time ({err.message[:200]}); "
                    "is `ocw worker` running?"
                )
            return f"{what}: Temporal said {err.status.name}: {err.message[:300]}"
        if isinstance(err, DatabaseUnavailable):  # it names the database already
            return f"{what}: {text[:400]}"
        if isinstance(err, DB_ERRORS):
            where_db = describe(Journal.target_of(s))
            return f"{what}: the journal {where_db} is unreadable: {text[:200]}"
        return f"{what} failed: {type(err).__name__}: {text[:300]}"


# ------------------------------------------------------------------ the server


def _read_only(title: str) -> ToolAnnotations:
    return ToolAnnotations(title=title, read_only_hint=True, open_world_hint=False)


def _json(value: Any) -> str:
    return pydantic_core.to_json(value, indent=2, fallback=str).decode()


def build_server(
    settings: Settings,
    client: Client | None = None,
    control: bool | None = None,
    timeout_s: float = VIEW_TIMEOUT_S,
) -> MCPServer:
    """The MCP server of one account (``settings.account``); ``client`` reuses a connection,
    ``control`` (default: ``OCW_MCP_CONTROL``) adds the control tools, ``timeout_s`` bounds
    each read and control call."""
    engine = Engine(settings, client, timeout_s)
    control = control_enabled() if control is None else control
    account = settings.account
    server = MCPServer(
        "ocw",
        title=f"OCW trading engine ({account})",
        instructions=INSTRUCTIONS,
        version="1",
    )

    async def read(what: str, fn: Callable[[Views], Awaitable[T]]) -> T:
        try:
            return await engine.call(what, fn)
        except EngineError as err:
            raise ToolError(str(err)) from None

    @server.tool(annotations=_read_only("Account overview"))
    async def overview() -> Overview:
        """The account at a glance, the first thing to ask: equity, cash, exposure (share of
        equity in positions), drawdown, whether new entries are halted and why, every open
        position with its entry, last price, net PnL and stop levels, who decides (LLM or rule)
        and the LLM's spend against its budget, the market regimes, the gate's and listener's
        health and the latest incidents."""
        return await read("overview", lambda v: v.overview())

    @server.tool(annotations=_read_only("Open positions"))
    async def positions() -> PositionsResult:
        """What the engine holds now, and how each holding is protected: per position the
        quantity, average entry, last price, cost, PnL net of the exit fee (amount and
        fraction), the safety stop-loss level, the trailing stop once active, the stop order
        resting at the exchange, and its watcher's last verdict and score. `answered: false`
        means its watcher workflow did not answer and the figures are the decision side's."""
        return PositionsResult(
            account=account, positions=await read("positions", lambda v: v.positions())
        )

    @server.tool(annotations=_read_only("Recent decisions"))
    async def decisions(
        limit: Annotated[int, Field(ge=1, le=500, description="how many, latest last")] = 20,
    ) -> DecisionsResult:
        """Why the engine did what it did: its latest decision cycles from the journal, each
        with what woke it (candle close, price move, manual...), who decided (llm, rule...),
        per ticker the action and the reasoning given, and the orders it executed."""
        rows = await read("decisions", lambda v: v.decisions(limit))
        return DecisionsResult(account=account, decisions=rows)

    @server.tool(annotations=_read_only("Closed trades"))
    async def trades(
        limit: Annotated[int, Field(ge=1, le=5000, description="how many, latest last")] = 50,
    ) -> TradesResult:
        """How trading has actually gone: closed trades from the journal with entry and exit
        price and time, quantity, fees, PnL net of fees (amount and fraction of cost), the exit
        reason (stop, trail, signal, manual...) and the signal weights it was opened on."""
        rows = await read("trades", lambda v: v.trades(limit))
        return TradesResult(account=account, trades=rows)

    @server.tool(annotations=_read_only("Performance metrics"))
    async def metrics() -> MetricsView:
        """Performance: initial cash, equity and cash now, drawdown from the peak, realized PnL,
        fees paid, the number of trades with wins and losses, and the equity curve (after each
        closed trade, then the live mark)."""
        return await read("metrics", lambda v: v.metrics())

    @server.tool(annotations=_read_only("Learner posteriors"))
    async def learner() -> PosteriorTable:
        """What the engine has learned about its own signals: per market regime (and overall)
        the number of trades and each signal group's Beta posterior (alpha, beta, mean), i.e.
        how reliable each kind of signal has been and how much it is trusted now."""
        return await read("learner", lambda v: v.learner())

    @server.tool(annotations=_read_only("Market regimes"))
    async def regimes() -> RegimesResult:
        """The market as the engine classifies it: the crypto regime (with its probability),
        the macro regime, and what they do to trading: the exposure scale applied to new
        positions and the multiplier on trailing-stop distances."""
        return RegimesResult(account=account, regimes=await read("regimes", lambda v: v.regimes()))

    @server.tool(annotations=_read_only("Incidents"))
    async def incidents(
        limit: Annotated[int, Field(ge=1, le=500, description="how many, latest last")] = 20,
    ) -> IncidentsResult:
        """What went wrong and how the engine handled it, from the journal: rejected or failed
        orders, reconciliation differences with the exchange, LLM failures and breaker trips,
        halts; each with its time, kind and detail."""
        rows = await read("incidents", lambda v: v.incidents(limit))
        return IncidentsResult(account=account, incidents=rows)

    @server.tool(annotations=_read_only("Raw workflow status"))
    async def status() -> dict[str, Any]:
        """The DecisionWorkflow's own status query, raw: for details the overview leaves out,
        such as the engine configuration, counters, the queue of wakes and the last decision
        log entries."""
        view = await read("status", lambda v: v.status())
        return view.model_dump(mode="json")

    resources: dict[str, tuple[str, Callable[[], Awaitable[Any]]]] = {
        "overview": ("equity, positions, halts, regimes, health", overview),
        "positions": ("open positions with PnL and stops", positions),
        "decisions": ("the latest 20 decisions and their reasoning", decisions),
        "trades": ("the latest 50 closed trades", trades),
        "metrics": ("equity curve, drawdown, wins and losses", metrics),
        "learner": ("the learner's posterior reliabilities", learner),
        "regimes": ("crypto and macro regimes", regimes),
        "incidents": ("the latest 20 incidents", incidents),
        "status": ("the DecisionWorkflow's raw status", status),
    }
    for name, (text, tool) in resources.items():
        server.resource(
            f"ocw://{name}",
            name=name,
            description=f"OCW {account}: {text} (JSON, read afresh)",
            mime_type="application/json",
        )(_resource(tool))

    if control:
        _add_control_tools(server, engine)
    return server


def _resource(tool: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[str]]:
    async def read() -> str:
        try:
            return _json(await tool())
        except ToolError as err:
            raise ResourceError(str(err)) from None

    return read


# ------------------------------------------------------------------ control


def _can_elicit(ctx: Context) -> bool:
    """Whether the client declared form elicitation (a bare ``elicitation: {}`` counts)."""
    with contextlib.suppress(Exception):
        caps = ctx.client_capabilities
        elicitation = caps.elicitation if caps is not None else None
        return elicitation is not None and (elicitation.form is not None or elicitation.url is None)
    return False


def _confirmation(name: str, question: str) -> Callable[..., Any]:
    """The resolver that asks for a control tool's confirmation: an elicitation when the client
    can show one (the ``confirm`` argument then does not count: the user answers, not the
    model), else the ``confirm`` argument, which must be true."""

    async def confirm_step(ctx: Context, confirm: bool) -> Confirmation | Elicit[Confirmation]:
        if _can_elicit(ctx):
            return Elicit(question, Confirmation)
        if confirm:
            return Confirmation(confirm=True)
        raise ToolError(
            f"{name} needs a confirmation and this client cannot ask the user (no MCP "
            f"elicitation): nothing changed. Ask the user, then call {name} again with "
            "confirm: true."
        )

    return confirm_step


def _add_control_tools(server: MCPServer, engine: Engine) -> None:
    wid = engine.workflow_id
    account = engine.settings.account
    how = (
        " Asks for a confirmation: the client shows the user a yes/no form (MCP elicitation); "
        "a client without elicitation must pass confirm: true, once the user has agreed."
    )

    def add(
        name: str,
        title: str,
        question: str,
        text: str,
        act: Callable[[Any, str], Awaitable[str]],
        destructive: bool,
    ) -> None:
        step = _confirmation(name, question)

        async def tool(
            confirmed: Annotated[ElicitationResult[Confirmation], Resolve(step)],
            reason: Annotated[str, Field(description="why, kept in the workflow's log")] = "",
            confirm: Annotated[
                bool, Field(description="true once the user agreed (clients without elicitation)")
            ] = False,
        ) -> ControlAnswer:
            accepted = isinstance(confirmed, AcceptedElicitation) and confirmed.data.confirm
            if not accepted:
                outcome = (
                    confirmed.action if not isinstance(confirmed, AcceptedElicitation) else "no"
                )
                raise ToolError(f"{name} not confirmed (answer: {outcome}): nothing changed")
            try:
                answer = await engine.control(name, lambda handle: act(handle, reason))
            except EngineError as err:
                raise ToolError(str(err)) from None
            log.info("mcp %s on %s: %s", name, wid, answer)
            return ControlAnswer(ok=True, action=name, workflow_id=wid, answer=answer)

        server.add_tool(
            tool,
            name=name,
            title=title,
            description=text + how,
            annotations=ToolAnnotations(
                title=title,
                read_only_hint=False,
                destructive_hint=destructive,
                idempotent_hint=name != "wake",
                open_world_hint=True,
            ),
        )

    async def halt(handle: Any, reason: str) -> str:
        return await warm_update(
            handle, DecisionWorkflow.halt_update, ControlRequest(reason=reason)
        )

    async def resume(handle: Any, reason: str) -> str:
        return await warm_update(
            handle, DecisionWorkflow.resume_update, ControlRequest(reason=reason)
        )

    async def close_all(handle: Any, reason: str) -> str:
        return await warm_update(
            handle, DecisionWorkflow.close_all_update, ControlRequest(reason=reason)
        )

    async def wake(handle: Any, reason: str) -> str:
        await handle.signal(DecisionWorkflow.wake, Wake(reason=reason or "mcp"))
        return "wake sent: a decision cycle runs now"

    add(
        "halt",
        "Halt new entries",
        f"Halt new entries on account {account}? Open positions keep their stops and exits.",
        f"Stop account {account} from opening new positions (exits and stops continue).",
        halt,
        destructive=False,
    )
    add(
        "resume",
        "Resume entries",
        f"Allow account {account} to open new positions again?",
        f"Lift a halt on account {account}: new entries are allowed again.",
        resume,
        destructive=False,
    )
    add(
        "close_all",
        "Close every position",
        f"Sell every open position of account {account} now, at market?",
        f"Exit every open position of account {account} at market.",
        close_all,
        destructive=True,
    )
    add(
        "wake",
        "Wake the engine",
        f"Run a decision cycle of account {account} now (it may trade)?",
        f"Wake account {account}'s DecisionWorkflow: a decision cycle runs now and may trade.",
        wake,
        destructive=False,
    )


# ------------------------------------------------------------------ running


class _UvicornServer:
    """uvicorn without its own signal handling: the CLI's stop event ends it."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = Server(config)

    async def serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn's answer to a failed startup
            raise SetupError("the MCP HTTP server did not start (see the log above)") from None

    def stop(self) -> None:
        self.server.should_exit = True


async def run_mcp(
    settings: Settings, stop: asyncio.Event, http: bool = False, port: int = DEFAULT_PORT
) -> int:
    """Serve until the client goes (stdio: its end of stdin closes) or ``stop`` is set."""
    server = build_server(settings)
    if http:
        ensure_can_listen(
            HOST, port, "is another `ocw mcp --http` running? Pick another port with --port."
        )
        uv = _UvicornServer(server.streamable_http_app(host=HOST), port)
        task = asyncio.create_task(uv.serve())
        print(
            f"OCW MCP server (account {settings.account}) on http://{HOST}:{port}/mcp"
            f"{', control tools on' if control_enabled() else ''}",
            file=sys.stderr,
            flush=True,
        )
    else:
        task = asyncio.create_task(server.run_stdio_async())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        if http:
            uv.stop()
        else:
            task.cancel()
        _, pending = await asyncio.wait({task}, timeout=5)
        if pending:
            # stdio's reader thread waits on a stdin the client keeps open: nothing is left
            # to flush, and the CLI ends with os._exit anyway (see workers/cli.py)
            log.info("stdin still open at stop: exiting")
            sys.stderr.flush()
            os._exit(0)
    with contextlib.suppress(asyncio.CancelledError):
        await task  # re-raises a SetupError of a failed start
    return 0


def claude_desktop_config(settings: Settings) -> str:
    """The ``mcpServers`` entry for Claude Desktop's config, for this checkout and account."""
    ocw = os.path.join(os.path.dirname(sys.executable), "ocw")
    entry = {
        "command": ocw,
        "args": ["mcp"],
        "env": {
            "OCW_HOME": str(settings.home.resolve()),
            "OCW_ACCOUNT": settings.account,
            "OCW_TEMPORAL_ADDRESS": settings.temporal_address,
        },
    }
    return json.dumps({"mcpServers": {"ocw": entry}}, indent=2)
