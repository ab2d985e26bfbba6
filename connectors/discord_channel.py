"""Discord: discord.py receives gateway events; the engine answers direct messages, mentions and /ask.

Named discord_channel so that it never shadows the `discord` package it imports.

discord.py runs every event handler as its own task, and the pipeline serialises messages per
conversation only, so a slow answer in one chat never holds up another: nothing here waits globally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.config import DiscordSettings
from bot.pipeline import RESUME_WINDOW_S, Exchange, Pipeline
from bot.storage.turns import Turn
from bot.types import Message, Reply
from connectors.base import ChannelError
from connectors.splitting import split_message

log = logging.getLogger(__name__)

CHANNEL = "discord"
TOKEN_ENV = "DISCORD_BOT_TOKEN"
MESSAGE_LIMIT = 2000  # characters per Discord message
MAX_PIECES = 8  # a reply is never more messages than this (the knowledge base limits answers to six)
SHORTENED = "… (shortened: the full answer is too long for this chat)"
BUTTON_LABEL_LIMIT = 80  # characters per button label
MAX_BUTTONS = 25  # five rows of five
QUOTE_LIMIT = 300  # how much of a /ask question or clicked suggestion is echoed above the answer
LOGIN_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 15.0
STOP_GRACE_SECONDS = 10.0  # answers in progress at shutdown get this long to be sent
RECENT_INTERACTIONS = 1000  # interaction ids remembered to recognise a redelivery at once
SUGGESTION_TEMPLATE = r"supportbot:suggest:(?P<turn>[0-9]{1,19}):(?P<index>[0-9]{1,3})"
# Replies quote knowledge and sometimes the customer's own words: they must never ping anyone.
NO_MENTIONS = discord.AllowedMentions.none()


def intents() -> discord.Intents:
    """Only what the connector reads, and no privileged intent. Discord sends the text of direct messages
    and of messages that mention the bot without MESSAGE CONTENT, and /ask and button clicks are
    interactions: everything answered here arrives with its text. Requesting the intent would make the
    connector fail (gateway close 4014) wherever an operator has not switched it on, and Discord grants it
    to verified bots only with a reason this bot does not have."""
    return discord.Intents(guilds=True, guild_messages=True, dm_messages=True)


def conversation_id_for(guild_id: int | None, channel_id: int | None, user_id: int) -> str:
    """One conversation per direct-message chat; in a server channel, one per person in that channel."""
    if guild_id is None:
        return f"discord:dm:{user_id}"
    return f"discord:{channel_id}:{user_id}"


def render(reply: Reply, quote: str | None = None) -> str:
    """Plain text: the question being answered (for /ask and buttons), the answer, sources, handoff."""
    parts = []
    if quote:
        shown = quote if len(quote) <= QUOTE_LIMIT else quote[: QUOTE_LIMIT - 1] + "…"
        parts.append("\n".join("> " + discord.utils.escape_markdown(line) for line in shown.splitlines()))
    parts.append(f"**{discord.utils.escape_markdown(reply.author)}**: {reply.text}" if reply.author else reply.text)
    if reply.citations:
        sources = "; ".join(f"{c.title} ({c.source}:{c.line})" for c in reply.citations)
        parts.append("Sources: " + discord.utils.escape_markdown(sources))
    if reply.handoff:
        parts.append("(handed over to a person)")
    return "\n\n".join(parts)


def reply_pieces(reply: Reply, quote: str | None = None) -> list[str]:
    """The reply as at most MAX_PIECES Discord messages of at most 2000 characters each."""
    pieces = split_message(render(reply, quote), MESSAGE_LIMIT) or [reply.text[:MESSAGE_LIMIT] or "…"]
    if len(pieces) > MAX_PIECES:
        last = pieces[MAX_PIECES - 1][: MESSAGE_LIMIT - len(SHORTENED)].rstrip()
        pieces = [*pieces[: MAX_PIECES - 1], last + SHORTENED]
    return pieces


def button_label(text: str) -> str:
    return text if len(text) <= BUTTON_LABEL_LIMIT else text[: BUTTON_LABEL_LIMIT - 1] + "…"


class SuggestionButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=SUGGESTION_TEMPLATE):
    """A suggested question. Its custom_id names the bot turn and the suggestion's place in it, so a click is
    understood after a restart too: discord.py matches the id against the template, not against a view
    kept in memory."""

    def __init__(self, turn_id: int, index: int, label: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=button_label(label),
                style=discord.ButtonStyle.secondary,
                custom_id=f"supportbot:suggest:{turn_id}:{index}",
            )
        )
        self.turn_id = turn_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SuggestionButton:
        label = getattr(item, "label", None) or ""
        return cls(int(match["turn"]), int(match["index"]), label)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        if isinstance(client, _SupportClient):
            await client.connector.handle_suggestion(interaction, self.turn_id, self.index, self.item.label or "")


class _SupportClient(discord.Client):
    """discord.py calls the client's on_* methods for events; these hand them to the connector."""

    def __init__(self, connector: DiscordConnector) -> None:
        # No message cache: edits and deletions are not answered, so cached messages would only cost memory.
        super().__init__(intents=intents(), max_messages=None)
        self.connector = connector
        self.tree: app_commands.CommandTree[_SupportClient] = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.connector.setup(self)

    async def on_message(self, message: discord.Message) -> None:
        await self.connector.handle_message(message)

    async def on_ready(self) -> None:
        await self.connector.on_ready()


@contextlib.contextmanager
def _class_attribute(owner: type, name: str, value: object) -> Iterator[None]:
    previous = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


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
        self._settings = settings
        self._token = token  # never logged, never part of an error message
        self._gateway_url = gateway_url
        self._allowed = frozenset(settings.allowed_channels)
        self.client = _SupportClient(self)
        self._gateway: asyncio.Task[None] | None = None
        self._overrides = contextlib.ExitStack()
        self.failure: str | None = None  # why Discord stopped after starting (the gateway gave up), if it did
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()  # event handlers answering right now
        self._recent_interactions: OrderedDict[int, None] = OrderedDict()
        self._resumed = False  # whether this run has looked for what an earlier one left unanswered

    # -- lifecycle ----------------------------------------------------------------------------------

    async def setup(self, client: _SupportClient) -> None:
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
        """Log in (token checked here), then run the gateway in a background task; returns once the
        gateway has accepted the session, or after READY_TIMEOUT_SECONDS while it keeps trying."""
        # discord.py builds every REST URL (interaction callbacks and webhooks included) from the class
        # attribute Route.BASE, and opens the gateway at DiscordWebSocket.DEFAULT_GATEWAY: there is no
        # per-client setting. They are set for this connector's lifetime only and restored by stop(), so
        # other clients in the process (and later tests) see Discord's own endpoints again.
        if self._settings.api_base:
            self._overrides.enter_context(_class_attribute(Route, "BASE", self._settings.api_base.rstrip("/")))
        if self._gateway_url:
            self._overrides.enter_context(
                _class_attribute(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self._gateway_url))
            )
        try:
            await self._login()
            await self._connect()
        except BaseException:
            await self.stop()
            raise

    async def _login(self) -> None:
        try:
            await asyncio.wait_for(self.client.login(self._token), LOGIN_TIMEOUT_SECONDS)
        except discord.LoginFailure as err:
            raise ChannelError("discord: the token was rejected (401); check DISCORD_BOT_TOKEN") from err
        except discord.HTTPException as err:
            raise ChannelError(f"discord: logging in failed (HTTP {err.status}): {err.text}") from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise ChannelError(f"discord: cannot reach the Discord API at {Route.BASE}: {err!r}") from err

    async def _connect(self) -> None:
        connected = asyncio.ensure_future(self.client.wait_for("connect"))
        self._gateway = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        done, _ = await asyncio.wait(
            {connected, self._gateway}, timeout=READY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        connected.cancel()
        if self._gateway in done:
            raise _gateway_error(self._gateway)
        self._gateway.add_done_callback(self._gateway_ended)  # from now on, a failure is logged and reported
        if connected not in done:
            log.warning("discord: logged in, still connecting to the gateway (it keeps retrying)")
            return
        user = self.client.user
        log.info("discord: connected as %s (id %s)", user, user.id if user else "?")

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
            since = time.time() - RESUME_WINDOW_S
            for turn in await self._pipeline().store.ledger.undelivered_from_people(CHANNEL, since):
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
        last = await self._pipeline().store.ledger.last_user_turn(turn.conversation_id)
        channel = self._channel(last.metadata) if last is not None else None
        if channel is None:
            log.warning("discord: no channel for conversation %s; the agent's reply is kept", turn.conversation_id)
            return False
        if not await self._pipeline().claim_turn(turn.id):
            return False
        exchange = Exchange(turn.reply_to or 0, turn.id, turn.as_reply())
        sent = await self._send(channel, exchange, None)
        await self._pipeline().turn_sent(turn.id, sent)
        return sent

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        """discord.py reconnects by itself; the task ends only when Discord refuses the session for good
        (a revoked token, an intent taken away). /health then shows Discord as failed."""
        if task.cancelled() or task.exception() is None or self._stopping:
            return
        self.failure = f"{_gateway_error(task)} (Discord is off until the server restarts)"
        log.error("%s", self.failure)

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
            try:
                if not self.client.is_closed():
                    await self.client.close()
                if self._gateway is not None and not self._gateway.done():
                    try:
                        await asyncio.wait_for(self._gateway, 10)
                    except (Exception, asyncio.CancelledError):
                        log.debug("discord: gateway task ended while stopping", exc_info=True)
            finally:
                self._overrides.close()

    # -- deciding what to answer --------------------------------------------------------------------

    def channel_allowed(self, channel: object) -> bool:
        """Configured channels, and threads started in them."""
        channel_id = getattr(channel, "id", None)
        parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
        return channel_id in self._allowed or (parent_id is not None and parent_id in self._allowed)

    def should_answer(self, message: discord.Message) -> bool:
        """Direct messages, and messages that mention the bot in a configured channel. Never bots (itself
        included), webhooks or system messages (joins, pins)."""
        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id or message.webhook_id is not None:
            return False
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return False
        if message.guild is None and isinstance(message.channel, discord.DMChannel):
            return True
        if not self.channel_allowed(message.channel):
            return False
        return any(user.id == me.id for user in message.mentions)

    def interaction_allowed(self, interaction: discord.Interaction) -> bool:
        return interaction.guild_id is None or self.channel_allowed(interaction.channel)

    def build_message(self, message: discord.Message) -> Message:
        """The engine's Message for a Discord message: the bot's own mention removed from the text."""
        text = message.content
        me = self.client.user
        if me is not None:
            text = re.sub(rf"<@!?{me.id}>\s*", "", text)
        guild_id = message.guild.id if message.guild is not None else _guild_id(message.channel)
        metadata = {
            "discord_message_id": str(message.id),
            "discord_channel_id": str(message.channel.id),
            "discord_user": message.author.name,
        }
        if guild_id is not None:
            metadata["discord_guild_id"] = str(guild_id)
        return Message(
            conversation_id=conversation_id_for(guild_id, message.channel.id, message.author.id),
            channel=CHANNEL,
            user_id=str(message.author.id),
            text=text.strip(),
            metadata=metadata,
            client_message_id=f"discord:{message.id}",
        )

    def interaction_message(self, interaction: discord.Interaction, text: str) -> Message:
        """The engine's Message for /ask or a suggestion click (the interaction id makes it idempotent)."""
        metadata = {
            "discord_interaction_id": str(interaction.id),
            "discord_channel_id": str(interaction.channel_id),
            "discord_user": interaction.user.name,
        }
        if interaction.guild_id is not None:
            metadata["discord_guild_id"] = str(interaction.guild_id)
        return Message(
            conversation_id=conversation_id_for(interaction.guild_id, interaction.channel_id, interaction.user.id),
            channel=CHANNEL,
            user_id=str(interaction.user.id),
            text=text,
            metadata=metadata,
            client_message_id=f"discord:{interaction.id}",
        )

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
        if not self.should_answer(message):
            log.debug("discord: message %s in channel %s is not for the bot; ignored", message.id, message.channel.id)
            return
        with self._answering() as accepted:
            if accepted:
                await self._answer_message(message)

    async def _answer_message(self, message: discord.Message) -> None:
        incoming = self.build_message(message)
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
        if not self.interaction_allowed(interaction):
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
                conversation = self.interaction_message(interaction, text).conversation_id
                text = await self._pipeline().store.suggestion(*suggestion, conversation) or text
            exchange = await self._pipeline().exchange(self.interaction_message(interaction, text))
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


def _guild_id(channel: object) -> int | None:
    guild = getattr(channel, "guild", None)
    if guild is not None:
        return int(guild.id)
    guild_id = getattr(channel, "guild_id", None)
    return int(guild_id) if guild_id is not None else None


def _gateway_error(task: asyncio.Task[None]) -> ChannelError:
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
