"""A real PostgreSQL 15 on a loopback port for the tests: a throwaway cluster made with `initdb` in a temp
folder (as the `postgres` user when run as root: initdb refuses root), password authentication over TCP,
removed at the end. Each test gets its own database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

PG_BIN = Path(os.environ.get("SUPPORTBOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
NEEDS_POSTGRES = pytest.mark.needs(
    "PostgreSQL 15 (for the store at scale)",
    (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists(),
    "install Debian's postgresql-15, or set SUPPORTBOT_PG_BIN to its bin folder",
)


class PostgresServer:
    """A cluster in a temp folder on `port`, user `supportbot` with a random password, until stop()."""

    user = "supportbot"

    def __init__(self, port: int) -> None:
        self.port = port
        self.password = secrets.token_urlsafe(16)
        self._folder = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))  # not under pytest's root-only tmp
        self._data = self._folder / "data"
        self._as_postgres = os.geteuid() == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        password_file = self._folder / "password"
        password_file.write_text(self.password)
        if self._as_postgres:
            shutil.chown(self._folder, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        self._run(
            PG_BIN / "initdb", "-D", str(self._data), "-U", self.user, "--pwfile", str(password_file),
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip
        self.resume(timeout)

    def resume(self, timeout: float = 60.0) -> None:
        """Start the server on the cluster made by start() (again, after pause())."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off "
            "-c full_page_writes=off -c max_connections=300"  # fsync off: a test machine; commits still reach the OS
        )
        self._run(PG_BIN / "pg_ctl", "-D", str(self._data), "-l", str(self._folder / "postgres.log"), "-o", options,
                  "-w", "-t", str(int(timeout)), "start")  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not answer within {timeout:g} s; see {self._folder}/postgres.log")
            time.sleep(0.1)

    def pause(self) -> None:
        """Stop the server at once (its clients' connections drop), keeping the cluster for resume()."""
        self._run(PG_BIN / "pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        async def create() -> None:
            conn = await asyncpg.connect(self.url(), password=self.password)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def _answers(self) -> bool:
        async def ping() -> None:
            conn = await asyncpg.connect(self.url(), password=self.password, timeout=5)
            await conn.close()

        try:
            asyncio.run(ping())
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        return True

    def _run(self, *command: str | Path) -> None:
        args = [str(part) for part in command]
        if self._as_postgres:
            args = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(args, capture_output=True, text=True, cwd=self._folder, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def stop(self) -> None:
        if (self._data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):  # it had stopped already: nothing left to stop
                self._run(PG_BIN / "pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._folder, ignore_errors=True)
