"""``connect()`` over real TLS (issue 13): the dev server behind a TLS-terminating proxy.

The dev server speaks plaintext gRPC; ``tests/tls_proxy.py`` puts TLS in front of it with a CA
and certificates made for the test, optionally requiring a client certificate (mTLS). What is
tested is the client side: the CA and server name, mTLS, the one-line errors, and the settings
as a user sets them (``OCW_TEMPORAL_TLS_*`` in the environment of ``ocw``). The dev server does
not check API keys (it ignores the ``authorization`` header), so the API-key case shows the
connection works over TLS with a key and that the client holds it, not that a server accepted
it; the header itself is HPACK-encoded inside TLS and not looked at.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from tests.tls_proxy import PKI, TLSProxy, make_pki
from trading.config import Settings
from workers.temporal_env import SetupError, connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KEY = "tls-test-api-key-not-a-real-one"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("OCW_TEMPORAL", "TEMPORAL_")):
            monkeypatch.delenv(name)


def upstream(dev_env) -> str:
    return dev_env.client.service_client.config.target_host


def settings(tmp_path: Path, address: str, **kw) -> Settings:
    return Settings(_env_file=None, home=tmp_path, temporal_address=address, **kw)


async def namespace_name(client) -> str:
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    return described.namespace_info.name


async def test_a_ca_and_a_server_name_connect(dev_env, pki, tmp_path):
    async with TLSProxy(upstream(dev_env), pki) as proxy:
        client = await connect(
            settings(
                tmp_path,
                proxy.address,
                temporal_tls_ca=pki.ca,
                temporal_tls_server_name="temporal.test",
            )
        )
        assert await namespace_name(client) == "default"
        assert (await client.count_workflows()).count >= 0  # the visibility API answers too
        assert proxy.peers  # it went through the proxy, in TLS


async def test_without_the_ca_it_is_one_line_about_tls(dev_env, pki, tmp_path):
    async with TLSProxy(upstream(dev_env), pki) as proxy:
        for extra in ({"temporal_tls": True}, {"temporal_tls_ca": pki.other_ca}):
            with pytest.raises(SetupError) as err:
                await connect(settings(tmp_path, proxy.address, **extra))
            text = str(err.value)
            assert "\n" not in text
            assert text.startswith(f"cannot reach Temporal at {proxy.address} (namespace 'default'")
            assert "TLS: the server's certificate is not trusted" in text
            assert "OCW_TEMPORAL_TLS_CA" in text
        assert not proxy.peers


async def test_a_wrong_server_name_is_named(dev_env, pki, tmp_path):
    async with TLSProxy(upstream(dev_env), pki) as proxy:
        with pytest.raises(SetupError, match="not valid for wrong.test.*SERVER_NAME"):
            await connect(
                settings(
                    tmp_path,
                    proxy.address,
                    temporal_tls_ca=pki.ca,
                    temporal_tls_server_name="wrong.test",
                )
            )


async def test_mtls_a_client_certificate_works_and_none_fails(dev_env, pki, tmp_path):
    async with TLSProxy(upstream(dev_env), pki, require_client_cert=True) as proxy:
        client = await connect(
            settings(
                tmp_path,
                proxy.address,
                temporal_tls_ca=pki.ca,
                temporal_tls_cert=pki.client_cert,
                temporal_tls_key=pki.client_key,
            )
        )
        assert await namespace_name(client) == "default"
        assert "ocw-test-worker" in proxy.peers  # the proxy saw our certificate

        with pytest.raises(SetupError) as err:
            await connect(settings(tmp_path, proxy.address, temporal_tls_ca=pki.ca))
        text = str(err.value)
        assert "\n" not in text and "TLS" in text
        assert "client certificate" in text and "OCW_TEMPORAL_TLS_CERT" in text


async def test_an_api_key_over_tls(dev_env, pki, tmp_path):
    """The dev server ignores the key: this shows it is given to the client and TLS holds."""
    async with TLSProxy(upstream(dev_env), pki) as proxy:
        client = await connect(
            settings(tmp_path, proxy.address, temporal_tls_ca=pki.ca, temporal_api_key=KEY)
        )
        assert client.api_key == KEY
        assert await namespace_name(client) == "default"
        # plaintext straight to the dev server with a key is refused unless it is local: here
        # it is local, so TLS=false is allowed (and works) with the key
        plain = await connect(
            settings(tmp_path, upstream(dev_env), temporal_tls=False, temporal_api_key=KEY)
        )
        assert await namespace_name(plain) == "default"


async def ocw(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, err.decode().strip()


async def test_the_cli_takes_the_tls_settings_from_the_environment(dev_env, pki, tmp_path):
    """``ocw status`` for an account that does not exist: past TLS it is the account that is
    missing; without the CA it is TLS, in one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCW_", "BINANCE_"))}
    async with TLSProxy(upstream(dev_env), pki) as proxy:
        env.update(OCW_HOME=str(tmp_path), OCW_ACCOUNT="nobody", OCW_TEMPORAL_ADDRESS=proxy.address)
        code, err = await ocw(["status"], {**env, "OCW_TEMPORAL_TLS_CA": str(pki.ca)})
        assert code == 2 and "ocw-decision-nobody" in err and "cannot reach" not in err, err
        code, err = await ocw(["status"], {**env, "OCW_TEMPORAL_TLS": "true"})
        assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
        assert "cannot reach Temporal" in err and "TLS" in err
