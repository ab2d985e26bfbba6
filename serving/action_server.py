"""The project's own rasa-sdk action server (`actions.start: true`), a child process of the bot.

It runs in its own environment (`actions.python`, made by scripts/setup.sh as .venv-actions) with the
token plugin from actions/plugins on its path, bound to loopback; the bot stops it when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bot.actions.client import ActionClient
from bot.config import ActionsSettings

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STOP_TIMEOUT_S = 10.0


class ActionServerError(RuntimeError):
    """The action server could not be started; says why and what to do."""


class ActionServerProcess:
    def __init__(self, settings: ActionsSettings, environ: Mapping[str, str], log_path: Path) -> None:
        self.settings = settings
        self._environ = environ
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    def _port(self) -> int:
        parts = urlsplit(self.settings.url)
        if parts.hostname not in LOOPBACK:
            raise ActionServerError(
                f"actions.start runs the action server on this machine, bound to loopback; actions.url "
                f"{self.settings.url} names {parts.hostname}: use 127.0.0.1, or set actions.start: false"
            )
        return parts.port or 5055

    async def start(self, client: ActionClient) -> None:
        """Start it and wait until /health answers, within actions.ready_timeout_s."""
        port = self._port()
        python = self.settings.python
        if not python.exists():
            raise ActionServerError(f"no action server environment at {python}: run scripts/setup.sh")
        plugins = self.settings.root / "actions" / "plugins"
        env = {**os.environ, **self._environ, "SANIC_HOST": "127.0.0.1",
               "SUPPORTBOT_ACTIONS_TOKEN_ENV": self.settings.token_env,
               "PYTHONPATH": os.pathsep.join(str(p) for p in (plugins, self.settings.root))}  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                str(python), "-m", "rasa_sdk", "--actions", self.settings.package, "--port", str(port),
                cwd=self.settings.root, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the bot, which stops this in order
            )  # fmt: skip
        log.info("action server starting: %s (package %s, log %s)", self.settings.url, self.settings.package,
                 self.log_path)  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ready_timeout_s
        while (problem := await client.health()) is not None:
            if self._process.returncode is not None:
                raise ActionServerError(f"the action server exited ({self._process.returncode}); see {self.log_path}")
            if loop.time() > deadline:
                await self.stop()
                within = f"{self.settings.ready_timeout_s:g}s"
                raise ActionServerError(f"the action server did not come up within {within} ({problem}); "
                                        f"see {self.log_path}")  # fmt: skip
            await asyncio.sleep(0.2)
        log.info("action server ready at %s", self.settings.url)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        # The whole process group (its own session): Sanic's worker process as well as its main one.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):  # a worker still in a slow action, or a main that hung
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
