"""The Discord connector: answers what the gateway brings, resumes after a restart, delivers agents' replies.

discord.py runs every event handler as its own task, and the pipeline serialises messages per
conversation only, so a slow answer in one chat never holds up another: nothing here waits globally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot.config import DiscordSettings
from bot.pipeline import RESUME_WINDOW_S, Exchange, Pipeline
from bot.storage.turns import Turn
from bot.types import Message
from connectors.base import ChannelError
from connectors.delivery import deliver_once
from connectors.discord_channel.client import SuggestionButton, SupportClient
from connectors.discord_channel.gateway import Gateway
from connectors.discord_channel.inbound import CHANNEL, Inbound
from connectors.discord_channel.render import MAX_BUTTONS, NO_MENTIONS, reply_pieces

log = logging.getLogger(__name__)

TOKEN_ENV = "DISCORD_BOT_TOKEN"
STOP_GRACE_SECONDS = 10.0  # answers in progress at shutdown get this long to be sent
RECENT_INTERACTIONS = 1000  # interaction ids remembered to recognise a redelivery at once


class DiscordConnector:
    """One bot account: logs in over REST, keeps a gateway connection in the background, answers."""

    name = CHANNEL

    def __init__(
        self,
        pipeline: Callable[[], Pipeline],
        settings: DiscordSettings,
        token: str,
        *,
        gateway_url: str | None = None,  # only for tests and proxies; None = Discord's own gateway
    ) -> None:
        self._pipeline = pipeline
        self.client = SupportClient(self)
        self.inbound = Inbound(lambda: self.client.user, settings.allowed_channels)
        self._gateway = Gateway(self.client, token, settings.api_base, gateway_url)
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()  # event handlers answering right now
        self._recent_interactions: OrderedDict[int, None] = OrderedDict()
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
            await self.handle_ask(interaction, question)

        client.add_dynamic_items(SuggestionButton)
        try:
            await client.tree.sync()
        except discord.HTTPException as err:
            # Direct messages and mentions still work; only /ask is missing until the next start.
            log.warning("discord: could not publish the /ask command (HTTP %s): %s", err.status, err.text)

    async def start(self) -> None:
        """Log in (token checked here), then run the gateway in the background (gateway.Gateway.open)."""
        try:
            await self._gateway.open()
        except BaseException:
            await self.stop()
            raise

    async def on_ready(self) -> None:
        """The gateway's first READY: channels are known, so what an earlier run left can be posted."""
        if self._resumed or self._stopping:
            return
        self._resumed = True
        with self._answering() as accepted:
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
            if not self._stopping:
                # A message being answered is stored with its answer: dropped now, it would count as sent.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + STOP_GRACE_SECONDS
                while self._in_flight and (left := deadline - loop.time()) > 0:
                    await asyncio.wait(set(self._in_flight), timeout=left)
                if self._in_flight:
                    log.warning("discord: stopping with %d answers still in progress", len(self._in_flight))
        finally:
            self._stopping = True
            await self._gateway.close()

    def build_view(self, exchange: Exchange) -> discord.ui.View | None:
        """Suggestions as buttons, or None when there are none."""
        suggestions = [(i, s) for i, s in enumerate(exchange.reply.quick_replies) if s.strip()][:MAX_BUTTONS]
        if not suggestions:
            return None
        # timeout=None: a timed-out view would unregister the SuggestionButton template for every message.
        view = discord.ui.View(timeout=None)
        for index, text in suggestions:
            view.add_item(SuggestionButton(exchange.bot_turn_id, index, text))
        return view

    # -- answering ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _answering(self) -> Iterator[bool]:
        """Marks the running event handler as answering, so stop() waits for it. False once stopping."""
        task = asyncio.current_task()
        if self._stopping or task is None:
            yield False
            return
        self._in_flight.add(task)
        try:
            yield True
        finally:
            self._in_flight.discard(task)

    async def handle_message(self, message: discord.Message) -> None:
        if not self.inbound.should_answer(message):
            log.debug("discord: message %s in channel %s is not for the bot; ignored", message.id, message.channel.id)
            return
        with self._answering() as accepted:
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
        """Post the reply's pieces in order; False when one could not be posted (the rest is not sent)."""
        pieces = reply_pieces(exchange.reply)
        view = self.build_view(exchange)
        for index, piece in enumerate(pieces):
            options: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
            if index == 0 and reference is not None:
                options["reference"] = reference
            if index == len(pieces) - 1 and view is not None:
                options["view"] = view  # buttons under the last piece, where the reader is
            sent = False
            with self._send_failures_logged(f"sending a reply in channel {getattr(channel, 'id', '?')}"):
                await channel.send(piece, **options)
                sent = True
            if not sent:
                return False  # the rest would read out of place without the piece that failed
        return True

    async def handle_ask(self, interaction: discord.Interaction, question: str) -> None:
        await self._answer_interaction(interaction, question)

    async def handle_suggestion(self, interaction: discord.Interaction, turn_id: int, index: int, label: str) -> None:
        # A label may be cut at 80 characters; the full suggestion is read from the stored reply.
        await self._answer_interaction(interaction, label.removesuffix("…"), suggestion=(turn_id, index))

    async def _answer_interaction(
        self, interaction: discord.Interaction, text: str, suggestion: tuple[int, int] | None = None
    ) -> None:
        """Answer /ask (`text`) or a click on the suggestion at (bot turn id, index) (`text`: its label)."""
        if not self.inbound.interaction_allowed(interaction):
            # Only the person who asked sees this; nothing is stored for a channel the bot does not serve.
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message(
                    "I only answer in direct messages and in the support channels.", ephemeral=True
                )
            return
        if self._redelivered(interaction.id):
            return
        with self._answering() as accepted:
            if accepted:
                await self._answer_new_interaction(interaction, text, suggestion)

    def _redelivered(self, interaction_id: int) -> bool:
        """Whether this interaction arrived before (a gateway replay); remembers it otherwise."""
        if interaction_id in self._recent_interactions:
            return True
        self._recent_interactions[interaction_id] = None
        if len(self._recent_interactions) > RECENT_INTERACTIONS:
            self._recent_interactions.popitem(last=False)
        return False

    async def _answer_new_interaction(
        self, interaction: discord.Interaction, text: str, suggestion: tuple[int, int] | None
    ) -> None:
        # Discord wants a first response within 3 seconds, and the answer may wait behind an earlier one in
        # the same conversation: "thinking…" (the interaction's typing indicator) goes out alongside, not
        # after. The message is handed to the pipeline at once all the same, so it keeps its place in line.
        acknowledging = asyncio.create_task(self._acknowledge(interaction))
        try:
            if suggestion is not None:
                # Looked up in this conversation only: a button's id can be crafted.
                conversation = self.inbound.interaction_message(interaction, text).conversation_id
                text = await self._pipeline().store.suggestion(*suggestion, conversation) or text
            exchange = await self._pipeline().exchange(self.inbound.interaction_message(interaction, text))
        finally:
            deferred = await acknowledging  # follow-ups need the acknowledgement
        if not await self._pipeline().claim_delivery(exchange):
            # Answered and sent before (by an earlier run of the bot): take back only this run's "thinking…".
            if deferred:
                with self._send_failures_logged(f"withdrawing the acknowledgement of interaction {interaction.id}"):
                    await interaction.delete_original_response()
            return
        pieces = reply_pieces(exchange.reply, quote=text)
        view = self.build_view(exchange)
        sent = False
        with self._send_failures_logged(f"answering interaction {interaction.id}"):
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                await interaction.followup.send(
                    piece,
                    allowed_mentions=NO_MENTIONS,
                    view=view if last and view is not None else discord.utils.MISSING,
                )
            sent = True
        await self._pipeline().delivered(exchange, sent)

    async def _acknowledge(self, interaction: discord.Interaction) -> bool:
        """Show "thinking…" for the interaction; False when Discord did not take it (expired, already taken)."""
        with self._send_failures_logged(f"acknowledging interaction {interaction.id}"):
            await interaction.response.defer(thinking=True)
            return True
        return False

    @contextlib.contextmanager
    def _send_failures_logged(self, what: str) -> Iterator[None]:
        """A request to Discord that fails is logged and given up; what it was for stays in the store."""
        try:
            yield
        except discord.HTTPException as err:
            log.warning("discord: %s failed (HTTP %s): %s", what, err.status, err.text)
        except (aiohttp.ClientError, OSError) as err:
            log.warning("discord: %s failed: %r", what, err)
        except RuntimeError as err:
            if not self.client.is_closed():  # only aiohttp's "Session is closed" (at shutdown) is expected
                raise
            log.warning("discord: %s failed: the connection is closed (%s)", what, err)


def discord_connector(
    pipeline: Callable[[], Pipeline],
    settings: DiscordSettings,
    environ: Mapping[str, str],
    *,
    gateway_url: str | None = None,
) -> DiscordConnector:
    """The connector with its token from DISCORD_BOT_TOKEN; ChannelError when it is not set."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ChannelError(f"discord: {TOKEN_ENV} is not set")
    return DiscordConnector(pipeline, settings, token, gateway_url=gateway_url)
