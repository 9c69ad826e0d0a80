"""The REST API and the dashboard (``ocw dashboard``): FastAPI, read-only by default.

Read-only endpoints under ``/api`` serve ``workers/views.py`` (Temporal queries and the journal
on every request); the OpenAPI schema is at ``/openapi.json`` and its browsable form at
``/docs``. Control endpoints (halt, resume, close-all, wake) exist only when
``OCW_API_TOKEN`` is set, and then need ``Authorization: Bearer <token>``; the dashboard asks
for the token and a confirmation before it sends one. The server binds to 127.0.0.1 unless told
otherwise. The page and its chart library are files of the package: nothing is fetched from a
CDN at run time.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.db import DB_ERRORS
from trading.config import Settings
from trading.learner import PosteriorTable
from trading.models import ClosedTrade, Wake
from workers.views import DecisionView, MetricsView, Overview, PositionView, Views
from workflows.decision import ControlRequest, DecisionWorkflow

STATIC = Path(__file__).with_name("dashboard")
DEFAULT_PORT = 8765


class ControlBody(BaseModel):
    reason: str = ""


class ControlAnswer(BaseModel):
    ok: bool
    answer: str


def create_app(client: Client, settings: Settings, token: str | None = None) -> FastAPI:
    views = Views(client, settings)
    app = FastAPI(
        title="OCW",
        summary="The engine's state: portfolio, positions, decisions, trades, regimes, learner",
        version="1",
    )

    async def _unavailable(_request: Any, err: Exception) -> JSONResponse:
        # Temporal, the account or the journal not there: one clear line, not a stack trace
        return JSONResponse(
            status_code=503,
            content={"detail": f"{type(err).__name__}: {str(err)[:300]}"},
        )

    for kind in (RPCError, WorkflowQueryFailedError, *DB_ERRORS, OSError):
        app.add_exception_handler(kind, _unavailable)

    @app.get("/api/overview", response_model=Overview, tags=["read"])
    async def overview() -> Overview:
        """Portfolio, open positions with stops and PnL, LLM, regimes, gate, listener."""
        return await views.overview()

    @app.get("/api/status", tags=["read"])
    async def status() -> dict[str, Any]:
        """The DecisionWorkflow's own status query, as it answers it."""
        return (await views.status()).model_dump(mode="json")

    @app.get("/api/positions", response_model=list[PositionView], tags=["read"])
    async def positions() -> list[PositionView]:
        return await views.positions()

    @app.get("/api/decisions", response_model=list[DecisionView], tags=["read"])
    async def decisions(limit: int = 50) -> list[DecisionView]:
        return await views.decisions(max(1, min(limit, 500)))

    @app.get("/api/trades", response_model=list[ClosedTrade], tags=["read"])
    async def trades(limit: int = 200) -> list[ClosedTrade]:
        return await views.trades(max(1, min(limit, 5000)))

    @app.get("/api/metrics", response_model=MetricsView, tags=["read"])
    async def metrics() -> MetricsView:
        """Equity curve (journal's closed trades, then the live mark) and drawdown."""
        return await views.metrics()

    @app.get("/api/learner", response_model=PosteriorTable, tags=["read"])
    async def learner() -> PosteriorTable:
        return await views.learner()

    @app.get("/api/regimes", tags=["read"])
    async def regimes() -> dict[str, Any]:
        info = await views.regimes()
        return info.model_dump(mode="json") if info else {}

    @app.get("/api/incidents", tags=["read"])
    async def incidents(limit: int = 50) -> list[dict[str, Any]]:
        return await views.incidents(max(1, min(limit, 500)))

    @app.get("/api/arena", tags=["read"])
    async def arena() -> dict[str, Any]:
        """Agent vs agent: the leaderboard of the arena defined under OCW_HOME (return,
        Sharpe, drawdown, fees, trades, LLM cost per agent); ``{"arena": null}`` without one."""
        from workers.arena import arena_json

        return await arena_json(client, settings)

    @app.get("/api/control", tags=["control"])
    async def control_state() -> dict[str, bool]:
        """Whether the control endpoints are enabled (a token is set)."""
        return {"enabled": token is not None}

    if token is not None:
        expected = f"Bearer {token}"

        def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
            if authorization is None or not hmac.compare_digest(authorization, expected):
                raise HTTPException(status_code=401, detail="a valid bearer token is needed")

        handle = client.get_workflow_handle(settings.decision_workflow_id)

        @app.post("/api/halt", response_model=ControlAnswer, tags=["control"])
        async def halt(body: ControlBody, _: None = Depends(authorized)) -> ControlAnswer:
            answer = await handle.execute_update(
                DecisionWorkflow.halt_update, ControlRequest(reason=body.reason), result_type=str
            )
            return ControlAnswer(ok=True, answer=answer)

        @app.post("/api/resume", response_model=ControlAnswer, tags=["control"])
        async def resume(body: ControlBody, _: None = Depends(authorized)) -> ControlAnswer:
            answer = await handle.execute_update(
                DecisionWorkflow.resume_update, ControlRequest(reason=body.reason), result_type=str
            )
            return ControlAnswer(ok=True, answer=answer)

        @app.post("/api/close-all", response_model=ControlAnswer, tags=["control"])
        async def close_all(body: ControlBody, _: None = Depends(authorized)) -> ControlAnswer:
            answer = await handle.execute_update(
                DecisionWorkflow.close_all_update,
                ControlRequest(reason=body.reason),
                result_type=str,
            )
            return ControlAnswer(ok=True, answer=answer)

        @app.post("/api/wake", response_model=ControlAnswer, tags=["control"])
        async def wake(body: ControlBody, _: None = Depends(authorized)) -> ControlAnswer:
            await handle.signal(DecisionWorkflow.wake, Wake(reason=body.reason or "dashboard"))
            return ControlAnswer(ok=True, answer="wake sent")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    return app
