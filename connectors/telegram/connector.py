"""Telegram: updates arrive by long polling or on the webhook; each is stored before Telegram is told.

Telegram never sends an update again once it was acknowledged: by the webhook's 200, or in polling
mode by the next getUpdates call, whose offset confirms everything before it. So an update is read and
its message stored (`receive`) first; only then is it acknowledged, and it is answered in the
background, so a slow answer never holds up Telegram or another chat. What a restart finds stored but
not answered, or answered but not sent, is answered and sent when the connector starts.

python-telegram-bot provides the Bot API client and the update types; the receiving loop is this
module's, because python-telegram-bot's own confirms updates as soon as they are queued in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from telegram import Bot, InlineKeyboardMarkup, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut

from bot.config import TelegramSettings
from bot.pipeline import RESUME_WINDOW_S, Exchange, Pipeline
from bot.storage.turns import Turn
from bot.types import Message, Reply
from connectors.base import ChannelError
from connectors.buttons import read_button
from connectors.delivery import deliver_once
from connectors.inflight import InFlight
from connectors.telegram.inbound import CHANNEL, Press, read_update
from connectors.telegram.render import QUICK_REPLY_PREFIX, quick_reply_keyboard, split_html_safe

log = logging.getLogger("connectors.telegram")

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
SECRET_ENV = "TELEGRAM_WEBHOOK_SECRET"
TYPING_REFRESH_SECONDS = 4.0  # Telegram shows "typing…" for about 5 seconds per chat action
STOP_GRACE_SECONDS = 10.0  # answers in progress at shutdown get this long to go out
POLL_RETRY_MAX_SECONDS = 30.0
POLLING_ROLE = "telegram-polling"
EXPIRED_BUTTON = "This button no longer works. Please type your question."


class TelegramConnector:
    name = CHANNEL

    def __init__(
        self, pipeline: Callable[[], Pipeline], settings: TelegramSettings, token: str, webhook_secret: str | None
    ) -> None:
        self._pipeline = pipeline
        self._settings = settings
        self._webhook_secret = webhook_secret
        self.bot = Bot(token, base_url=settings.base_url)
        self._polling: asyncio.Task[None] | None = None
        self._answering = InFlight()
        self.running = False
        # Why Telegram stopped working after start-up, if it did (a token revoked while running).
        self.failure: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.bot.initialize()  # getMe: proves the token works
        except InvalidToken:
            # Not the library's message: it quotes the token itself, and this one goes to logs and /health.
            raise ChannelError(f"telegram: the token in {TOKEN_ENV} was rejected by the Bot API") from None
        except (NetworkError, TimedOut) as err:
            raise ChannelError(f"telegram: cannot reach the Bot API at {self._settings.base_url}: {err}") from err
        try:
            if self._settings.mode == "polling":
                await self.bot.delete_webhook()  # getUpdates is refused while a webhook is set
            else:
                await self.bot.set_webhook(
                    url=str(self._settings.webhook_url),
                    secret_token=self._webhook_secret,
                    allowed_updates=Update.ALL_TYPES,
                )
        except BaseException:
            # Refused (a webhook URL the Bot API will not call, say): the channel stays off.
            await self.bot.shutdown()
            raise
        self.running = True
        await self._resume()
        if self._settings.mode == "polling":
            # One process polls (getUpdates from two would be refused as a conflict): the one elected for
            # the role, at once when this is the only process. A webhook may reach any process.
            coordination = self._pipeline().coordination
            self._polling = asyncio.create_task(coordination.lead(POLLING_ROLE, self._poll), name="telegram polling")
        log.info("telegram: running as @%s (%s)", self.bot.username, self._settings.mode)

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
        # Answers in progress go out first; what is left is answered at the next start.
        await self._answering.drain(STOP_GRACE_SECONDS, cancel_late=True)
        await self.bot.shutdown()

    def _fail(self, why: str) -> None:
        if self.failure is not None:
            return  # the first reason is the one to act on
        self.failure = f"telegram: {why} (Telegram is off until the server restarts)"
        log.error("%s", self.failure)

    # -- receiving ----------------------------------------------------------------------------------

    async def receive(self, update: Update) -> None:
        """Read one update and store its message; answering happens in the background.

        Returns once what must survive a crash is stored: only then may the update be acknowledged.
        Raises when it could not be stored (the update must then not be acknowledged).
        """
        try:
            read = read_update(update, self.bot.id, self.bot.username)
        except Exception:  # an update this code cannot read must not block the ones after it
            log.exception("telegram: update %s could not be read; skipped", update.update_id)
            return
        if read is None:
            _log_ignored(update)
            return
        message = await self._pressed(read) if isinstance(read, Press) else read
        if message is None:
            return
        stored = await self._pipeline().receive(message)
        self._in_background(self._answer(message, stored))

    async def _pressed(self, press: Press) -> Message | None:
        """The message a button press stands for: the suggestion it names, in this conversation only."""
        place = read_button(press.data, QUICK_REPLY_PREFIX)
        text = None
        if place is not None:
            text = await self._pipeline().store.suggestion(*place, press.conversation_id)
        self._in_background(self._answer_press(press.query_id, None if text else EXPIRED_BUTTON))
        if text is None:
            log.warning("telegram: button data %r from chat %s names no suggestion of its own", press.data[:80],
                        press.chat.id)  # fmt: skip
            return None
        return Message(
            conversation_id=press.conversation_id,
            channel=CHANNEL,
            user_id=str(press.user_id),
            text=text,
            metadata={"chat_id": str(press.chat.id), "chat_type": str(press.chat.type)},
            client_message_id=f"telegram:cb:{press.query_id}",
        )

    async def _answer_press(self, query_id: str, notice: str | None) -> None:
        """Stops the button's loading spinner (with a short notice when the press did nothing)."""
        with contextlib.suppress(TelegramError):
            await self.bot.answer_callback_query(query_id, text=notice)

    async def _poll(self) -> None:
        """Long polling, while this process holds POLLING_ROLE. The offset moves past an update only once it
        is stored (a process elected after another died fetches what that one had not confirmed)."""
        log.info("telegram: this process polls for updates")
        offset: int | None = None
        delay = 1.0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=dt.timedelta(seconds=self._settings.poll_timeout),
                    allowed_updates=Update.ALL_TYPES,
                )
            except InvalidToken:
                self._fail(f"polling stopped: the token in {TOKEN_ENV} was rejected")
                return
            except TelegramError as err:  # network errors, 5xx, a conflicting getUpdates elsewhere
                log.warning("telegram: polling error, retrying in %.0fs: %s", delay, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_RETRY_MAX_SECONDS)
                continue
            delay = 1.0
            for update in updates:
                try:
                    await self.receive(update)
                except Exception:
                    # Not stored (the store failed): ask for it again rather than confirm it.
                    log.exception("telegram: update %s could not be stored; fetching it again", update.update_id)
                    await asyncio.sleep(delay)
                    break
                offset = update.update_id + 1

    # -- answering ----------------------------------------------------------------------------------

    def _in_background(self, work: Awaitable[None]) -> None:
        self._answering.start(work)

    async def _resume(self) -> None:
        """Answer, and send, what an earlier run stored but did not finish: each conversation in order."""
        pending = await self._pipeline().pending(CHANNEL, time.time() - RESUME_WINDOW_S, undelivered_too=True)
        by_conversation: dict[str, list[tuple[int, Message]]] = {}
        for turn_id, message in pending:
            by_conversation.setdefault(message.conversation_id, []).append((turn_id, message))
        for messages in by_conversation.values():
            self._in_background(self._answer_in_turn(messages))
        if pending:
            log.info("telegram: resuming %d messages stored before the restart", len(pending))
        unsent = await self._pipeline().people_replies_to_send(CHANNEL, time.time() - RESUME_WINDOW_S)
        for turn in unsent:
            self._in_background(self._deliver_logged(turn))
        if unsent:
            log.info("telegram: sending %d agents' replies not confirmed sent before the restart", len(unsent))

    async def _deliver_logged(self, turn: Turn) -> None:
        try:
            await self.deliver(turn)
        except Exception:
            log.exception("telegram: sending the agent's reply %s failed", turn.id)

    async def deliver(self, turn: Turn) -> bool:
        """Send a reply a person wrote to the chat its conversation came from, once (claimed, then confirmed)."""

        async def send(chat_id: int) -> bool:
            return await self._send_pieces(chat_id, turn.as_reply(), turn.id)

        return await deliver_once(self._pipeline(), turn, CHANNEL, _chat_id, send)

    async def _answer_in_turn(self, messages: list[tuple[int, Message]]) -> None:
        for turn_id, message in messages:
            await self._answer(message, turn_id)

    async def _answer(self, message: Message, stored_turn_id: int) -> None:
        try:
            chat_id = int(message.metadata["chat_id"])
            typing = asyncio.create_task(self._keep_typing(chat_id))
            try:
                exchange = await self._pipeline().exchange(message, stored_turn_id=stored_turn_id)
            finally:
                typing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await typing
            if not await self._pipeline().claim_delivery(exchange):
                if not exchange.silent:
                    log.info("telegram: duplicate update %s answered before; not sending again",
                             message.client_message_id)  # fmt: skip
                return
            sent = await self._send_reply(chat_id, exchange)
            await self._pipeline().delivered(exchange, sent)
        except Exception:
            log.exception("telegram: answering %s failed", message.client_message_id)

    async def _keep_typing(self, chat_id: int) -> None:
        while True:
            with contextlib.suppress(TelegramError):
                await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(TYPING_REFRESH_SECONDS)

    async def _send_reply(self, chat_id: int, exchange: Exchange) -> bool:
        return await self._send_pieces(chat_id, exchange.reply, exchange.bot_turn_id)

    async def _send_pieces(self, chat_id: int, reply: Reply, bot_turn_id: int) -> bool:
        pieces = split_html_safe(reply)
        for index, piece in enumerate(pieces):
            markup = quick_reply_keyboard(reply, bot_turn_id) if index == len(pieces) - 1 else None

            async def send(piece: str = piece, markup: InlineKeyboardMarkup | None = markup) -> object:
                return await self.bot.send_message(
                    chat_id, piece, parse_mode=ParseMode.HTML, reply_markup=markup, disable_web_page_preview=True
                )

            if not await self._with_retries(send, chat_id):
                return False  # the reply stays in the store; the failure is logged
        return True

    async def _with_retries(self, call: Callable[[], Awaitable[object]], chat_id: int) -> bool:
        """Retry flood control (after Telegram's retry_after), 5xx and network errors, with backoff."""
        delay = 0.5
        for attempt in range(self._settings.send_retries + 1):
            try:
                await call()
                return True
            except RetryAfter as err:
                wait = err.retry_after
                seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
                log.warning("telegram: flood control for chat %s, retrying in %.1fs", chat_id, seconds)
                await asyncio.sleep(seconds)
            except (NetworkError, TimedOut) as err:  # includes 5xx answers from the Bot API
                if attempt == self._settings.send_retries:
                    log.error("telegram: giving up sending to chat %s after %d tries: %s", chat_id, attempt + 1, err)
                    return False
                log.warning("telegram: send to chat %s failed (%s), retrying in %.1fs", chat_id, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except InvalidToken:
                # Revoked while running. In webhook mode nothing else would notice: Telegram just stops
                # calling, so /health says it here.
                self._fail(f"the token in {TOKEN_ENV} was rejected when sending to chat {chat_id}")
                return False
            except TelegramError as err:
                log.error("telegram: send to chat %s refused: %s", chat_id, err)
                return False
        log.error("telegram: giving up sending to chat %s: still rate limited", chat_id)
        return False

    def verify_secret(self, header: str | None) -> bool:
        if self._webhook_secret is None:
            return True
        return header is not None and hmac.compare_digest(header, self._webhook_secret)


def _log_ignored(update: Update) -> None:
    message = update.effective_message
    if message is not None and message.chat.type != "private":
        log.debug("telegram: message %s in chat %s not addressed to the bot; ignored", message.id, message.chat.id)
    else:
        log.debug("telegram: update %s has nothing to answer; ignored", update.update_id)


def telegram_connector(
    pipeline: Callable[[], Pipeline], settings: TelegramSettings, environ: Mapping[str, str]
) -> TelegramConnector:
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ChannelError(f"telegram: {TOKEN_ENV} is not set")
    secret = environ.get(SECRET_ENV, "").strip() or None
    if settings.mode == "webhook":
        if not settings.webhook_url:
            raise ChannelError("telegram: webhook mode needs channels.telegram.webhook_url")
        if secret is None:
            raise ChannelError(f"telegram: webhook mode needs {SECRET_ENV} (Telegram sends it back on every call)")
    return TelegramConnector(pipeline, settings, token, secret)


def _chat_id(metadata: Mapping[str, str]) -> int | None:
    raw = metadata.get("chat_id", "")
    return int(raw) if raw.lstrip("-").isdigit() else None
