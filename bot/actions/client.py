"""Calls a rasa-sdk action server: /health and /actions at start-up, /webhook for each action.

Status codes as rasa-sdk's endpoint defines them: 404 the action is unknown, 400 the action rejected the
call (ActionExecutionRejection), 449 the server has no domain under that digest (sent again with it),
500 the action raised. Every call, the resend included, is bounded by `actions.timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import httpx

from bot.actions.contract import ActionOutcome, BadActionResponse, Domain, TrackerState, read_outcome, webhook_body
from bot.config import ActionsSettings

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Supportbot-Action-Token"  # checked by actions/plugins/rasa_sdk_plugins


class Failure(StrEnum):
    UNKNOWN = "unknown_action"  # 404
    REJECTED = "rejected"  # 400
    FAILED = "failed"  # 500: the action raised
    UNAUTHORIZED = "unauthorized"  # 401/403: the shared secret is missing or wrong
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"


class ActionError(Exception):
    def __init__(self, failure: Failure, action: str, detail: str) -> None:
        super().__init__(f"action {action}: {failure} ({detail})")
        self.failure = failure
        self.action = action
        self.detail = detail


class ActionClient:
    def __init__(
        self,
        settings: ActionsSettings,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        headers = {"content-type": "application/json"}
        token = environ.get(settings.token_env, "")
        if token:
            headers[TOKEN_HEADER] = token  # never logged
        self._http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"), headers=headers, timeout=settings.timeout_s, transport=transport
        )
        self._known_digest: str | None = None  # the domain the server last took from us

    async def health(self) -> str | None:
        """None when the server answers /health with ok; otherwise why not."""
        try:
            response = await self._http.get("/health")
        except httpx.HTTPError as err:
            return f"cannot reach the action server at {self.settings.url}: {err!r}"
        if response.status_code != 200:
            return f"the action server's /health answered HTTP {response.status_code}"
        return None

    async def names(self) -> set[str]:
        """The actions the server lists (GET /actions); ActionError when it cannot say."""
        try:
            response = await self._http.get("/actions")
        except httpx.HTTPError as err:
            raise ActionError(Failure.UNREACHABLE, "/actions", repr(err)) from err
        self._raise_for(response, "/actions")
        listed = response.json()
        if not isinstance(listed, list):
            raise ActionError(Failure.BAD_RESPONSE, "/actions", "expected a list of {name}")
        return {str(item["name"]) for item in listed if isinstance(item, dict) and "name" in item}

    async def run(self, action: str, tracker: TrackerState, domain: Domain) -> ActionOutcome:
        """Run one action; ActionError (with why) when it could not, within actions.timeout_s in all."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await self._run(action, tracker, domain)
        except TimeoutError as err:
            raise ActionError(Failure.TIMEOUT, action, f"no answer within {self.settings.timeout_s:g}s") from err

    async def _run(self, action: str, tracker: TrackerState, domain: Domain) -> ActionOutcome:
        with_domain = self._known_digest != domain.digest
        response = await self._post(action, webhook_body(action, tracker, domain, with_domain))
        if response.status_code == 449 and not with_domain:  # the server lost our domain (it restarted)
            response = await self._post(action, webhook_body(action, tracker, domain, True))
            with_domain = True
        self._raise_for(response, action)
        if with_domain:
            self._known_digest = domain.digest
        try:
            return read_outcome(response.json(), domain)
        except (ValueError, BadActionResponse) as err:
            raise ActionError(Failure.BAD_RESPONSE, action, str(err)) from err

    async def _post(self, action: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return await self._http.post("/webhook", json=body)
        except httpx.TimeoutException as err:
            raise ActionError(Failure.TIMEOUT, action, repr(err)) from err
        except httpx.HTTPError as err:
            raise ActionError(Failure.UNREACHABLE, action, repr(err)) from err

    @staticmethod
    def _raise_for(response: httpx.Response, action: str) -> None:
        status = response.status_code
        if status == 200:
            return
        detail = _error_text(response)
        failure = {404: Failure.UNKNOWN, 400: Failure.REJECTED, 401: Failure.UNAUTHORIZED,
                   403: Failure.UNAUTHORIZED, 449: Failure.BAD_RESPONSE}.get(status, Failure.FAILED)  # fmt: skip
        raise ActionError(failure, action, f"HTTP {status}: {detail}")

    async def aclose(self) -> None:
        await self._http.aclose()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", body))[:200] if isinstance(body, dict) else str(body)[:200]
