"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, a free port, stop at the end.

Debian's ``postgresql`` package puts ``initdb`` in ``/usr/lib/postgresql/<version>/bin``; it
refuses to run as root, so under root (CI) the server runs as the ``postgres`` system user
(``runuser``) in a temp dir given to it. Local connections (the unix socket in the temp dir)
are trusted; TCP needs the password (scram), so a wrong one can be tested. Each test gets a
fresh schema (``fresh_url``): a few milliseconds instead of a new database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from pydantic import SecretStr

SUPERUSER = "postgres"
PASSWORD = "pg-test-secret"
DATABASE = "ocw_test"


def find_bindir() -> Path | None:
    """The directory of ``initdb``: on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server on 127.0.0.1:``port`` with its socket in ``root``, database ``ocw_test``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' system user")
            if not shutil.which("runuser"):
                pytest.skip("running as root and there is no runuser to become 'postgres'")
            self.as_user = ["runuser", "-u", SUPERUSER, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="ocw-pg-"))
        self.data = self.root / "data"
        self.port = 0

    def _run(self, *argv: str) -> None:
        cmd = [*self.as_user, str(self.bindir / argv[0]), *argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}\n{tail}")

    def start(self) -> None:
        if self.as_user:
            shutil.chown(self.root, SUPERUSER)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, SUPERUSER)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        for attempt in range(3):  # the free port may be taken between the check and the bind
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                    "-o", options, "-w", "-t", "30", "start",
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        with psycopg.connect(self.admin_dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        try:
            if self.port:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_dsn(self, dbname: str = DATABASE) -> str:
        """Over the unix socket, trusted: for the fixtures themselves."""
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, password: str = PASSWORD, **query: str) -> str:
        """A TCP URL with a password, as a user writes OCW_DB_URL."""
        tail = "&".join(f"{k}={quote(v)}" for k, v in query.items())
        return (
            f"postgresql://{SUPERUSER}:{quote(password, safe='')}@127.0.0.1:{self.port}/"
            f"{DATABASE}" + (f"?{tail}" if tail else "")
        )

    def fresh_url(self) -> SecretStr:
        """A URL whose tables land in a new, empty schema (one per test)."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return SecretStr(self.url(options=f"-csearch_path={schema}"))


def postgres_server() -> Iterator[PostgresServer]:
    """The session fixture's body: start once, skip cleanly when PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL initdb (apt-get install postgresql): Postgres tests skipped")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def db_target(request: pytest.FixtureRequest, path: Path) -> Path | SecretStr:
    """``path`` for the sqlite parameter, a fresh Postgres schema for the postgres one."""
    if request.param == "sqlite":
        return path
    return request.getfixturevalue("postgres").fresh_url()
