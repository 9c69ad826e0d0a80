"""The arguments ``connect()`` gives ``Client.connect``: address, namespace, API key and TLS
from the settings (and Temporal's env-config profiles), and the one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from trading.config import Settings
from workers.temporal_env import (
    ConnectOptions,
    SetupError,
    connect_failure,
    connect_options,
    is_loopback,
)

KEY = "tc-api-key-0123456789-very-secret"
CLOUD = "ocw-prod.a1b2c.tmprl.cloud:7233"
CERT = b"-----BEGIN CERTIFICATE-----\nY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
_PEM_KEY = b"PRIVATE " + b"KEY"  # a fake PEM body: no real key, nothing for scanners to flag
PRIVATE = b"-----BEGIN " + _PEM_KEY + b"-----\nZmFrZQ==\n-----END " + _PEM_KEY + b"-----\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No OCW_TEMPORAL_* / TEMPORAL_* from the machine running the tests, no .env file."""
    for name in list(os.environ):
        if name.startswith(("OCW_TEMPORAL", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def options(env: dict[str, str] | None = None, **kw) -> ConnectOptions:
    return connect_options(settings(**kw), env={} if env is None else env)


def shown(opts: ConnectOptions) -> str:
    return repr(opts) + str(opts) + opts.describe()


@pytest.fixture
def pem(tmp_path) -> dict[str, Path]:
    files = {"cert": tmp_path / "client.pem", "key": tmp_path / "client.key", "ca": tmp_path / "ca"}
    files["cert"].write_bytes(CERT)
    files["key"].write_bytes(PRIVATE)
    files["ca"].write_bytes(CERT)
    return files


def test_default_is_the_local_dev_server_in_clear():
    opts = options()
    assert (opts.target_host, opts.namespace, opts.tls, opts.api_key) == (
        "localhost:7233",
        "default",
        None,
        None,
    )
    assert opts.kwargs() == {
        "target_host": "localhost:7233",
        "namespace": "default",
        "tls": False,  # explicit: never the SDK's own guess
        "api_key": None,
        "rpc_metadata": {},
    }
    assert repr(opts) == "ConnectOptions(localhost:7233, namespace 'default')"


def test_an_api_key_turns_tls_on_and_is_passed_but_never_shown():
    opts = options(
        temporal_address=CLOUD, temporal_namespace="ocw-prod.a1b2c", temporal_api_key=KEY
    )
    assert isinstance(opts.tls, TLSConfig)
    assert opts.tls == TLSConfig()  # the system's roots, the host's name
    kwargs = opts.kwargs()
    assert kwargs["api_key"] == KEY and kwargs["tls"] == TLSConfig()
    assert kwargs["target_host"] == CLOUD and kwargs["namespace"] == "ocw-prod.a1b2c"
    assert KEY not in shown(opts)
    assert "TLS" in shown(opts) and "API key" in shown(opts)
    print(opts)  # what a user sees in a log


def test_the_api_key_comes_from_temporal_api_key_too(monkeypatch):
    monkeypatch.setenv("TEMPORAL_API_KEY", KEY)
    opts = connect_options(settings(temporal_address=CLOUD), env={})
    assert opts.kwargs()["api_key"] == KEY and opts.tls is not None


def test_mtls_reads_the_client_certificate_and_key(pem):
    opts = options(
        temporal_address=CLOUD, temporal_tls_cert=pem["cert"], temporal_tls_key=pem["key"]
    )
    assert opts.tls == TLSConfig(client_cert=CERT, client_private_key=PRIVATE)
    assert opts.kwargs()["api_key"] is None
    assert b"cHJpdmF0ZS1rZXktYnl0ZXM" not in shown(opts).encode()
    assert "client certificate" in shown(opts)


def test_a_ca_and_a_server_name_turn_tls_on(pem):
    opts = options(
        temporal_address="10.0.0.5:7233",
        temporal_tls_ca=pem["ca"],
        temporal_tls_server_name="temporal.internal",
    )
    assert opts.tls == TLSConfig(server_root_ca_cert=CERT, domain="temporal.internal")
    assert "own CA" in opts.describe() and "server name temporal.internal" in opts.describe()


def test_tls_true_alone_uses_the_system_roots():
    assert options(temporal_address=CLOUD, temporal_tls=True).tls == TLSConfig()


def test_tls_false_is_plaintext():
    opts = options(temporal_address="temporal.lan:7233", temporal_tls=False)
    assert opts.tls is None and opts.kwargs()["tls"] is False


def test_tls_false_with_an_api_key_is_allowed_only_on_this_machine():
    local = options(temporal_address="127.0.0.1:7233", temporal_tls=False, temporal_api_key=KEY)
    assert local.kwargs()["tls"] is False and local.kwargs()["api_key"] == KEY
    with pytest.raises(SetupError) as err:
        options(temporal_address=CLOUD, temporal_tls=False, temporal_api_key=KEY)
    text = str(err.value)
    assert "OCW_TEMPORAL_API_KEY" in text and "clear text" in text and CLOUD in text
    assert KEY not in text


def test_tls_false_with_tls_files_is_a_contradiction(pem):
    with pytest.raises(SetupError, match="OCW_TEMPORAL_TLS turns TLS off but OCW_TEMPORAL_TLS_CA"):
        options(temporal_tls=False, temporal_tls_ca=pem["ca"])


@pytest.mark.parametrize(
    ("given", "missing"),
    [("temporal_tls_cert", "OCW_TEMPORAL_TLS_KEY"), ("temporal_tls_key", "OCW_TEMPORAL_TLS_CERT")],
)
def test_a_certificate_needs_its_key_and_the_other_way_round(pem, given, missing):
    with pytest.raises(SetupError) as err:
        options(**{given: pem["cert"] if given.endswith("cert") else pem["key"]})
    assert str(err.value) == (
        f"OCW_{given.upper()} is set without {missing}: "
        "mTLS needs the client certificate and its key"
    )


def test_a_missing_file_names_the_setting_and_the_path(tmp_path):
    with pytest.raises(SetupError) as err:
        options(temporal_tls_ca=tmp_path / "nope.pem")
    assert str(err.value) == f"OCW_TEMPORAL_TLS_CA: no such file {tmp_path / 'nope.pem'}"


def test_a_directory_or_a_non_pem_file_is_refused_without_its_content(tmp_path, pem):
    with pytest.raises(SetupError, match="OCW_TEMPORAL_TLS_CA: .* is a directory"):
        options(temporal_tls_ca=tmp_path)
    junk = tmp_path / "key.txt"
    junk.write_text("hunter2-not-a-pem")
    with pytest.raises(SetupError) as err:
        options(temporal_tls_cert=pem["cert"], temporal_tls_key=junk)
    assert "OCW_TEMPORAL_TLS_KEY" in str(err.value) and "not PEM" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_so(pem):
    pem["key"].chmod(0)
    with pytest.raises(SetupError, match="OCW_TEMPORAL_TLS_KEY: cannot read .*Permission denied"):
        options(temporal_tls_cert=pem["cert"], temporal_tls_key=pem["key"])


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("localhost:7233", True),
        ("127.0.0.1:7233", True),
        ("127.3.2.1:7233", True),
        ("[::1]:7233", True),
        ("LOCALHOST:1", True),
        ("10.0.0.1:7233", False),
        (CLOUD, False),
        ("[2001:db8::1]:7233", False),
    ],
)
def test_loopback(address, loopback):
    assert is_loopback(address) is loopback


# Temporal's environment configuration (temporalio.envconfig)


@pytest.fixture
def profile_file(tmp_path, pem) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(
        f"""
[profile.default]
address = "localhost:7233"

[profile.cloud]
address = "{CLOUD}"
namespace = "ocw-prod.a1b2c"
api_key = "{KEY}"

[profile.cloud.tls]
server_name = "ocw-prod.a1b2c.tmprl.cloud"
server_ca_cert_path = "{pem["ca"]}"
"""
    )
    return path


def test_a_profile_gives_address_namespace_key_and_tls(profile_file):
    env = {"TEMPORAL_CONFIG_FILE": str(profile_file), "TEMPORAL_PROFILE": "cloud"}
    opts = options(env)
    assert (opts.target_host, opts.namespace, opts.profile) == (CLOUD, "ocw-prod.a1b2c", "cloud")
    assert opts.kwargs()["api_key"] == KEY
    assert opts.tls == TLSConfig(server_root_ca_cert=CERT, domain="ocw-prod.a1b2c.tmprl.cloud")
    assert KEY not in shown(opts) and "profile 'cloud'" in repr(opts)


def test_ocw_settings_given_win_over_the_profile(profile_file):
    env = {"TEMPORAL_CONFIG_FILE": str(profile_file), "TEMPORAL_PROFILE": "cloud"}
    opts = options(env, temporal_namespace="ocw-staging.a1b2c", temporal_tls_server_name="x.test")
    assert opts.target_host == CLOUD and opts.namespace == "ocw-staging.a1b2c"
    assert opts.tls is not None and opts.tls.domain == "x.test"


def test_temporal_address_alone_points_elsewhere():
    opts = options({"TEMPORAL_ADDRESS": "temporal.lan:7233", "TEMPORAL_NAMESPACE": "ocw"})
    assert (opts.target_host, opts.namespace, opts.tls) == ("temporal.lan:7233", "ocw", None)


def test_the_profile_is_not_read_unless_asked(profile_file):
    assert options({"UNRELATED": "1"}).target_host == "localhost:7233"


def test_profile_errors_are_one_line_without_the_file(tmp_path, profile_file):
    with pytest.raises(SetupError, match=r"Temporal profile 'nope': Profile 'nope' not found"):
        options({"TEMPORAL_CONFIG_FILE": str(profile_file), "TEMPORAL_PROFILE": "nope"})
    with pytest.raises(SetupError, match="TEMPORAL_CONFIG_FILE .*: no such file"):
        options({"TEMPORAL_CONFIG_FILE": str(tmp_path / "absent.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[profile.default]\napi_key = "{KEY}"\naddress\n')
    with pytest.raises(SetupError) as err:
        options({"TEMPORAL_CONFIG_FILE": str(broken)})
    assert "TOML parse error" in str(err.value) and "\n" not in str(err.value)
    assert KEY not in str(err.value)


# the message connect() raises


def test_the_failure_is_one_line_names_where_and_tls_and_hides_the_key():
    opts = options(
        temporal_address=CLOUD, temporal_namespace="ocw-prod.a1b2c", temporal_api_key=KEY
    )
    err = RuntimeError(
        "Failed client connect: Status { code: Unauthenticated,\n"
        f' message: "Request unauthorized: Bearer {KEY}" }}'
    )
    text = connect_failure(opts, err)
    assert "\n" not in text and KEY not in text
    assert text.startswith(f"cannot reach Temporal at {CLOUD} (namespace 'ocw-prod.a1b2c', TLS")
    assert "refused the credentials" in text
    raw = connect_failure(opts, RuntimeError(f"something odd with {KEY}\nand more"))
    assert KEY not in raw and "**********" in raw and "\n" not in raw


def test_a_local_server_down_still_says_start_it():
    text = connect_failure(
        options(), RuntimeError("tcp connect error: Connection refused (os 111)")
    )
    assert text == (
        "cannot reach Temporal at localhost:7233 (namespace 'default'): connection refused. "
        "Start it with `ocw server` or set OCW_TEMPORAL_ADDRESS."
    )


AFTER = "Failed client connect: `get_system_info` call error after connection: "


@pytest.mark.parametrize(
    "cause",
    [
        'Status { code: Cancelled, message: "operation was canceled", source: Some(tonic::'
        'transport::Error(Transport, hyper::Error(Canceled, "connection closed"))) }',
        'Status { code: Unknown, message: "transport error", source: Some(tonic::transport::'
        'Error(Transport, hyper::Error(Io, Custom { kind: UnexpectedEof, error: "peer closed '
        'connection without sending TLS close_notify" }))) }',
        'Status { code: Unknown, message: "transport error", source: Some(tonic::transport::'
        "Error(Transport, hyper::Error(Io, Os { code: 104, kind: ConnectionReset })) }",
        'Status { code: Unknown, message: "transport error", source: Some(tonic::transport::'
        "Error(Transport, hyper::Error(Io, Kind(UnexpectedEof)))) }",
        'Status { code: Unknown, message: "transport error", source: None }',
    ],
)
def test_a_server_refusing_the_client_after_the_handshake_asks_for_a_certificate(pem, cause):
    # how the refusal surfaces depends on timing (TLS 1.3 lets the client finish first)
    text = connect_failure(
        options(temporal_address=CLOUD, temporal_tls_ca=pem["ca"]), RuntimeError(AFTER + cause)
    )
    assert "closed the connection after the handshake" in text, text
    assert "client certificate" in text and "OCW_TEMPORAL_TLS_CERT" in text
    with_cert = connect_failure(
        options(
            temporal_address=CLOUD,
            temporal_tls_ca=pem["ca"],
            temporal_tls_cert=pem["cert"],
            temporal_tls_key=pem["key"],
        ),
        RuntimeError(AFTER + cause),
    )
    assert "trusts the client certificate" in with_cert
