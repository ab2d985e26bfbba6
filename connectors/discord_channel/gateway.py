"""Logging in to Discord and keeping the gateway connection, with errors an operator can act on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import discord
from discord.http import Route

from connectors.base import ChannelError

log = logging.getLogger(__name__)

LOGIN_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 15.0

# Runs the gateway connection while this process is the one elected for it (Coordination.lead, bound to a role).
Elect = Callable[[Callable[[], Awaitable[None]]], Coroutine[Any, Any, None]]


class Gateway:
    """One client's session: REST login (the token checked), then the gateway in a background task."""

    def __init__(self, client: discord.Client, token: str) -> None:
        self._client = client
        self._token = token  # never logged, never part of an error message
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: str | None = None  # why Discord stopped after starting (the gateway gave up), if it did

    async def open(self, elect: Elect | None = None) -> None:
        """Returns once the gateway has accepted the session, or after READY_TIMEOUT_SECONDS while it keeps
        trying; ChannelError when the token is refused or Discord cannot be reached.

        With `elect` (several processes on one bot account), every process logs in and can post over REST,
        and only the one elected connects the gateway: open returns after the login."""
        await self._login()
        if elect is None:
            await self._connect()
            return
        self._task = asyncio.create_task(elect(self._hold), name="discord-gateway")
        self._task.add_done_callback(self._ended)
        log.info("discord: logged in; the gateway connects from the process elected for it")

    async def _hold(self) -> None:
        """The gateway, while this process is elected for it. Lost election: closed, so the next one connects."""
        log.info("discord: this process holds the gateway connection")
        try:
            await self._client.connect(reconnect=True)
        finally:
            ws = self._client.ws
            if ws is not None and not self._closing:
                with contextlib.suppress(Exception):
                    await ws.close(code=1000)

    async def _login(self) -> None:
        try:
            await asyncio.wait_for(self._client.login(self._token), LOGIN_TIMEOUT_SECONDS)
        except discord.LoginFailure as err:
            raise ChannelError("discord: the token was rejected (401); check DISCORD_BOT_TOKEN") from err
        except discord.HTTPException as err:
            raise ChannelError(f"discord: logging in failed (HTTP {err.status}): {err.text}") from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise ChannelError(f"discord: cannot reach the Discord API at {Route.BASE}: {err!r}") from err

    async def _connect(self) -> None:
        connected = asyncio.ensure_future(self._client.wait_for("connect"))
        self._task = asyncio.create_task(self._client.connect(reconnect=True), name="discord-gateway")
        done, _ = await asyncio.wait(
            {connected, self._task}, timeout=READY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        connected.cancel()
        if self._task in done:
            raise gateway_error(self._task)
        self._task.add_done_callback(self._ended)  # from now on, a failure is logged and reported
        if connected not in done:
            log.warning("discord: logged in, still connecting to the gateway (it keeps retrying)")
            return
        user = self._client.user
        log.info("discord: connected as %s (id %s)", user, user.id if user else "?")

    def _ended(self, task: asyncio.Task[None]) -> None:
        """discord.py reconnects by itself; the task ends only when Discord refuses the session for good
        (a revoked token, an intent taken away). /health then shows Discord as failed."""
        if task.cancelled() or task.exception() is None or self._closing:
            return
        self.failure = f"{gateway_error(task)} (Discord is off until the server restarts)"
        log.error("%s", self.failure)

    async def close(self) -> None:
        """Close the gateway and the HTTP session; idempotent."""
        self._closing = True
        if not self._client.is_closed():
            await self._client.close()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, 10)
            except (Exception, asyncio.CancelledError):
                log.debug("discord: gateway task ended while stopping", exc_info=True)


def gateway_error(task: asyncio.Task[None]) -> ChannelError:
    error = task.exception() if not task.cancelled() else None
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return ChannelError(
            "discord: the gateway refused a privileged intent that is not enabled for this bot "
            "(developer portal > Bot > Privileged Gateway Intents)"
        )
    if isinstance(error, discord.ConnectionClosed) and error.code == 4004:
        return ChannelError("discord: the token was rejected by the gateway (4004); check DISCORD_BOT_TOKEN")
    if isinstance(error, discord.ConnectionClosed):
        return ChannelError(f"discord: the gateway closed the connection ({error.code}): {error.reason}")
    return ChannelError(f"discord: the gateway connection ended: {error!r}")
