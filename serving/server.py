"""The HTTP server: uvicorn's, which ends the app's never-ending responses first when it is asked to stop.

uvicorn stops by waiting for open responses to finish, and an agent's inbox feed (server-sent events) never
finishes by itself: with an inbox open, SIGTERM or Ctrl-C would wait forever. So the server tells the app
to end its streams before it waits, and cancels whatever still runs after SHUTDOWN_GRACE_S.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

SHUTDOWN_GRACE_S = 10  # then requests still running are cancelled (a stuck one never holds up a restart)
STARTUP_FAILURE = 3  # uvicorn's exit code when the server could not start (the port taken, say)


class BotServer(uvicorn.Server):
    def __init__(self, app: FastAPI, **options: Any) -> None:
        super().__init__(uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **options))
        self._end_streams: Callable[[], None] | None = getattr(app.state, "end_streams", None)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._end_streams is not None:
            self._end_streams()
        await super().shutdown(sockets)


def serve(app: FastAPI, **options: Any) -> None:
    """Serves until SIGINT or SIGTERM, as `uvicorn.run` does; exits 3 if the server could not start."""
    server = BotServer(app, **options)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while stopping
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
