"""PositionWorkflow runs outside Temporal's sandbox (issue 14: the sandbox cost about a third of
the worker's CPU per workflow task at 1,000 positions). What the sandbox would have caught is
checked here instead, on the source: no clock, randomness, I/O or threads in the workflow or in
the ``trading`` modules it runs, and no module-level state that instances could share."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "position.py"

# what may be called from workflow code: Temporal's own clock, timers and randomness only
FORBIDDEN_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "sleep"),
    ("time", "time_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("os", "getenv"),
    ("os", "urandom"),
}
FORBIDDEN_NAMES = {"open", "input", "print", "exec", "eval"}
FORBIDDEN_MODULES = {
    "random",
    "secrets",
    "socket",
    "sqlite3",
    "threading",
    "subprocess",
    "urllib",
    "http",
    "requests",
    "httpx",
    "psycopg",
    "numpy",
    "pandas",
    "websockets",
    "ccxt",
    "anthropic",
    "activities",
    "signals",
    "workers",
}


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module or "")
    return out


def _trading_closure() -> dict[str, ast.AST]:
    """The workflow module and every ``trading``/``workflows`` module it reaches."""
    seen: dict[str, ast.AST] = {}
    todo = ["workflows.position"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        seen[name] = tree
        for mod in _imports(tree):
            if mod.split(".")[0] in ("trading", "workflows") and mod not in seen:
                candidate = ROOT / (mod.replace(".", "/") + ".py")
                if candidate.exists() or (ROOT / mod.replace(".", "/")).is_dir():
                    todo.append(mod)
    return seen


def test_the_workflow_and_what_it_runs_import_no_io_or_randomness():
    modules = _trading_closure()
    assert "trading.safety" in modules and "trading.state" in modules
    for name, tree in modules.items():
        for mod in _imports(tree):
            top = mod.split(".")[0]
            assert top not in FORBIDDEN_MODULES, f"{name} imports {mod}"
            assert top in sys.stdlib_module_names or top in (
                "trading",
                "workflows",
                "temporalio",
                "pydantic",
                "typing_extensions",
            ), f"{name} imports {mod}"


def test_the_workflow_and_what_it_runs_call_no_clock_or_io():
    for name, tree in _trading_closure().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            if isinstance(fn, ast.Name):
                assert fn.id not in FORBIDDEN_NAMES, f"{name}:{node.lineno} calls {fn.id}()"
            elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name):
                pair = (fn.value.id, fn.attr)
                assert pair not in FORBIDDEN_CALLS, f"{name}:{node.lineno} calls {'.'.join(pair)}"


def test_the_workflow_module_holds_no_mutable_state_at_module_level():
    """Unsandboxed, every instance shares the module: only constants may live there."""
    tree = ast.parse(WORKFLOW.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            assert not isinstance(
                value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
            ), f"module-level mutable at line {node.lineno}"
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                assert value.func.id not in ("list", "dict", "set", "defaultdict"), node.lineno


def test_the_position_workflow_is_the_one_unsandboxed():
    from workflows.decision import DecisionWorkflow
    from workflows.monitor import MonitorWorkflow
    from workflows.position import PositionWorkflow

    def sandboxed(cls) -> bool:
        return cls.__temporal_workflow_definition.sandboxed

    assert not sandboxed(PositionWorkflow)
    assert sandboxed(DecisionWorkflow) and sandboxed(MonitorWorkflow)
