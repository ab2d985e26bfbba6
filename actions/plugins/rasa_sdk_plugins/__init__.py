"""The project's extension of the rasa-sdk action server: a shared secret on every call but /health.

rasa-sdk ships no authentication. Its server loads a top-level package named `rasa_sdk_plugins` when it
can import it and calls `init_hooks`; `bot serve` puts this folder on the action server's PYTHONPATH.
The secret is read from the variable SUPPORTBOT_ACTIONS_TOKEN_ENV names (default
SUPPORTBOT_ACTIONS_TOKEN); when that is empty, the server takes calls without one (bind it to loopback).
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any

import pluggy
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

HEADER = "X-Supportbot-Action-Token"
hookimpl = pluggy.HookimplMarker("rasa_sdk")
log = logging.getLogger(__name__)


class TokenCheck:
    @hookimpl  # type: ignore[misc]
    def attach_sanic_app_extensions(self, app: Sanic) -> None:
        name = os.environ.get("SUPPORTBOT_ACTIONS_TOKEN_ENV", "SUPPORTBOT_ACTIONS_TOKEN")
        secret = os.environ.get(name, "")
        if not secret:
            log.warning("no %s set: the action server takes calls without a token", name)
            return

        @app.on_request
        async def check(request: Request) -> HTTPResponse | None:
            if request.path == "/health":
                return None
            given = request.headers.get(HEADER, "")
            if hmac.compare_digest(given.encode(), secret.encode()):
                return None
            return response.json({"error": f"missing or wrong {HEADER}"}, status=401)


def init_hooks(manager: Any) -> None:
    manager.register(TokenCheck())
