"""The Discord connector: answers what the gateway brings, resumes after a restart, delivers agents' replies.

discord.py runs every event handler as its own task, and the pipeline serialises messages per
conversation only, so a slow answer in one chat never holds up another: nothing here waits globally.
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from functools import partial

import discord
from discord import app_commands

from bot.config import DiscordSettings
from bot.pipeline import RESUME_WINDOW_S, Exchange, Pipeline
from bot.storage.coordination import LocalCoordination
from bot.storage.turns import Turn
from bot.types import Message
from connectors.base import ChannelError
from connectors.delivery import deliver_once
from connectors.discord_channel.client import SuggestionButton, SupportClient
from connectors.discord_channel.gateway import Gateway
from connectors.discord_channel.inbound import CHANNEL, Inbound
from connectors.discord_channel.interactions import Interactions
from connectors.discord_channel.sending import build_view, post
from connectors.discord_channel.stand_in import StandIn
from connectors.inflight import InFlight
from connectors.proxies import https_proxy, where

log = logging.getLogger(__name__)

TOKEN_ENV = "DISCORD_BOT_TOKEN"
GATEWAY_ROLE = "discord-gateway"  # Discord allows one session per bot account (unsharded)
STOP_GRACE_SECONDS = 10.0  # answers in progress at shutdown get this long to be sent


class DiscordConnector:
    """One bot account: logs in over REST, keeps a gateway connection in the background, answers."""

    name = CHANNEL

    def __init__(
        self,
        pipeline: Callable[[], Pipeline],
        settings: DiscordSettings,
        token: str,
        *,
        stand_in: StandIn | None = None,  # None: Discord itself; else a stand-in for it (tests)
        proxy: str | None = None,  # an http(s):// proxy for the API and the gateway; None: direct
    ) -> None:
        self._pipeline = pipeline
        self.client = SupportClient(self, stand_in.connector() if stand_in is not None else None, proxy)
        self.inbound = Inbound(lambda: self.client.user, settings.allowed_channels)
        self._gateway = Gateway(self.client, token)
        self._in_flight = InFlight()  # event handlers answering right now
        self._interactions = Interactions(pipeline, self.client, self.inbound, self._in_flight)
        self._resumed = False  # whether this run has looked for what an earlier one left unanswered

    @property
    def failure(self) -> str | None:
        """Why Discord stopped after starting (the gateway gave up), if it did."""
        return self._gateway.failure

    # -- lifecycle ----------------------------------------------------------------------------------

    async def setup(self, client: SupportClient) -> None:
        """After login, before the gateway: register /ask and the suggestion buttons, publish /ask."""

        @client.tree.command(name="ask", description="Ask the support assistant a question")
        @app_commands.describe(question="Your question")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            await self._interactions.ask(interaction, question)

        client.add_dynamic_items(SuggestionButton)
        try:
            await client.tree.sync()
        except discord.HTTPException as err:
            # Direct messages and mentions still work; only /ask is missing until the next start.
            log.warning("discord: could not publish the /ask command (HTTP %s): %s", err.status, err.text)

    async def start(self) -> None:
        """Log in (token checked here), then run the gateway in the background (gateway.Gateway.open): in
        this process, or in the one elected for GATEWAY_ROLE when several share a coordination service."""
        coordination = self._pipeline().coordination
        elect = None if coordination.kind == LocalCoordination.kind else partial(coordination.lead, GATEWAY_ROLE)
        try:
            await self._gateway.open(elect)
        except BaseException:
            await self.stop()
            raise

    async def on_ready(self) -> None:
        """The gateway's first READY: channels are known, so what an earlier run left can be posted."""
        if self._resumed or self._in_flight.stopping:
            return
        self._resumed = True
        with self._in_flight.this_task() as accepted:
            if accepted:
                await self._resume()

    async def _resume(self) -> None:
        """Answer, and post, what an earlier run stored but did not finish, in its channel, oldest first."""
        try:
            pending = await self._pipeline().pending(CHANNEL, time.time() - RESUME_WINDOW_S, undelivered_too=True)
            for turn_id, message in pending:
                await self._resume_one(turn_id, message)
            if pending:
                log.info("discord: resumed %d messages stored before the restart", len(pending))
            for turn in await self._pipeline().people_replies_to_send(CHANNEL, time.time() - RESUME_WINDOW_S):
                await self.deliver(turn)
        except Exception:
            log.exception("discord: resuming the messages stored before the restart failed")

    async def _resume_one(self, turn_id: int, message: Message) -> None:
        channel = self._channel(message.metadata)
        if channel is None:
            log.warning("discord: cannot resume message %s: no channel stored with it", message.client_message_id)
            return
        exchange = await self._pipeline().exchange(message, stored_turn_id=turn_id)
        if await self._pipeline().claim_delivery(exchange):
            await self._pipeline().delivered(exchange, await self._send(channel, exchange, None))

    def _channel(self, metadata: Mapping[str, str]) -> discord.PartialMessageable | None:
        """Where a stored message came from, to post in without fetching it first (a DM channel is not
        in the cache after a restart, and need not be: posting only needs its id)."""
        raw = metadata.get("discord_channel_id", "")
        if not raw.isdigit() or int(raw) == 0:
            return None
        return self.client.get_partial_messageable(int(raw))

    async def deliver(self, turn: Turn) -> bool:
        """Post a reply a person wrote in the DM or channel its conversation came from, once."""
        exchange = Exchange(turn.reply_to or 0, turn.id, turn.as_reply())

        async def send(channel: discord.PartialMessageable) -> bool:
            return await self._send(channel, exchange, None)

        return await deliver_once(self._pipeline(), turn, CHANNEL, self._channel, send)

    async def stop(self) -> None:
        """Send the answers in progress (and answer what arrives meanwhile) for up to STOP_GRACE_SECONDS,
        then stop taking events and close the gateway and the HTTP session; idempotent."""
        try:
            if not self._in_flight.stopping:
                # A message being answered is stored with its answer: dropped now, it would count as sent.
                late = await self._in_flight.drain(STOP_GRACE_SECONDS, cancel_late=False, take_new_meanwhile=True)
                if late:
                    log.warning("discord: stopping with %d answers still in progress", late)
        finally:
            self._in_flight.stopping = True
            await self._gateway.close()

    def build_view(self, exchange: Exchange) -> discord.ui.View | None:
        """Suggestions as buttons, or None when there are none."""
        return build_view(exchange)

    # -- answering ----------------------------------------------------------------------------------

    async def handle_message(self, message: discord.Message) -> None:
        if not self.inbound.should_answer(message):
            log.debug("discord: message %s in channel %s is not for the bot; ignored", message.id, message.channel.id)
            return
        with self._in_flight.this_task() as accepted:
            if accepted:
                await self._answer_message(message)

    async def _answer_message(self, message: discord.Message) -> None:
        incoming = self.inbound.message(message)
        reference = message.to_reference(fail_if_not_exists=False) if message.guild is not None else None
        async with contextlib.AsyncExitStack() as typing:

            async def stored(_turn_id: int) -> None:
                # Only once the message is stored as new: a duplicate event shows no typing at all.
                try:
                    await typing.enter_async_context(message.channel.typing())
                except discord.HTTPException as err:
                    log.warning("discord: cannot show typing in channel %s (HTTP %s)", message.channel.id, err.status)

            exchange = await self._pipeline().exchange(incoming, on_stored=stored)
            if not await self._pipeline().claim_delivery(exchange):
                return  # answered and sent before: a redelivered event must not post the answer twice
            await self._pipeline().delivered(exchange, await self._send(message.channel, exchange, reference))

    async def _send(
        self, channel: discord.abc.Messageable, exchange: Exchange, reference: discord.MessageReference | None
    ) -> bool:
        return await post(self.client, channel, exchange, reference)

    async def handle_suggestion(self, interaction: discord.Interaction, turn_id: int, index: int, label: str) -> None:
        await self._interactions.suggestion(interaction, turn_id, index, label)


def discord_connector(
    pipeline: Callable[[], Pipeline],
    settings: DiscordSettings,
    environ: Mapping[str, str],
    *,
    stand_in: StandIn | None = None,
) -> DiscordConnector:
    """The connector with its token from DISCORD_BOT_TOKEN, through the proxy HTTPS_PROXY names unless
    NO_PROXY lists discord.com (as for Telegram); ChannelError when the token is not set or the proxy is not
    one discord.py can use."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ChannelError(f"discord: {TOKEN_ENV} is not set")
    proxy = https_proxy(environ, "discord.com")
    if proxy is not None:
        parts = urllib.parse.urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChannelError(
                f"discord: the proxy at {where(proxy)} (HTTPS_PROXY or ALL_PROXY) is not an http:// or https:// URL; "
                "discord.py cannot use others (SOCKS). Add discord.com to NO_PROXY to connect "
                "Discord directly"
            )
        log.info("discord: connecting through the proxy at %s", where(proxy))
    return DiscordConnector(pipeline, settings, token, stand_in=stand_in, proxy=proxy)
