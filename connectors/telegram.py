"""Telegram: python-telegram-bot receives updates (long polling or webhook); the engine answers them.

Receiving only queues an update; python-telegram-bot processes updates concurrently, and the pipeline
serialises messages per conversation, so a slow answer in one chat never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import html
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from telegram import Chat, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram import Message as TgMessage
from telegram.constants import ChatAction, MessageLimit, ParseMode
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bot.config import TelegramSettings
from bot.pipeline import Pipeline
from bot.textsplit import split_message
from bot.types import Message, Reply
from connectors.base import ChannelError

log = logging.getLogger(__name__)

CHANNEL = "telegram"
TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
SECRET_ENV = "TELEGRAM_WEBHOOK_SECRET"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TYPING_REFRESH_SECONDS = 4.0  # Telegram shows "typing…" for about 5 seconds per chat action
QUICK_REPLY_PREFIX = "qr:"
BUTTON_TEXT_LIMIT = 64  # longer button texts are shown cut anyway


def conversation_id_for(chat: Chat, user_id: int) -> str:
    """One conversation per private chat; in groups, one per person in that group."""
    if chat.type == Chat.PRIVATE:
        return f"telegram:{chat.id}"
    return f"telegram:{chat.id}:{user_id}"


def render_html(reply: Reply) -> str:
    """The reply as Telegram HTML: every piece of text escaped, sources and handoff in italics."""
    parts = [html.escape(reply.text)]
    if reply.citations:
        sources = "; ".join(f"{c.title} ({c.source}:{c.line})" for c in reply.citations)
        parts.append(f"<i>Sources: {html.escape(sources)}</i>")
    if reply.handoff:
        parts.append("<i>A person from our team will reply here.</i>")
    return "\n\n".join(parts)


def split_html_safe(reply: Reply, limit: int = MessageLimit.MAX_TEXT_LENGTH) -> list[str]:
    """Split on the plain text first, then escape, so no cut ever lands inside an entity or a tag."""
    pieces: list[str] = []
    chunk_limit = limit
    while True:
        pieces = [html.escape(p) for p in split_message(reply.text, chunk_limit)]
        if all(len(p) <= limit for p in pieces):
            break
        chunk_limit = int(chunk_limit * 0.8)  # escaping made a piece grow past the limit
    tail = render_html(Reply(text="", answered_by=reply.answered_by, citations=reply.citations, handoff=reply.handoff))
    tail = tail.strip()
    if tail and pieces and len(pieces[-1]) + 2 + len(tail) <= limit:
        pieces[-1] = f"{pieces[-1]}\n\n{tail}"
    elif tail:
        pieces.append(tail)
    return pieces or [tail]


def quick_reply_keyboard(reply: Reply, bot_turn_id: int) -> InlineKeyboardMarkup | None:
    """Suggestions as buttons. callback_data is capped at 64 bytes, so it names the stored reply and the
    suggestion's place in it; the full text is read back from the store (a button shows at most 64)."""
    if not reply.quick_replies:
        return None
    buttons = [
        [InlineKeyboardButton(text[:BUTTON_TEXT_LIMIT], callback_data=f"{QUICK_REPLY_PREFIX}{bot_turn_id}:{index}")]
        for index, text in enumerate(reply.quick_replies)
    ]
    return InlineKeyboardMarkup(buttons)


def addressed_to_bot(message: TgMessage, bot_id: int, bot_username: str) -> bool:
    """Private chats always; in groups, only a mention of the bot or a reply to one of its messages."""
    if message.chat.type == Chat.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    for entity, text in message.parse_entities([MessageEntity.MENTION, MessageEntity.TEXT_MENTION]).items():
        if entity.type == MessageEntity.MENTION and text.lstrip("@").casefold() == bot_username.casefold():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            return True
    return False


def without_mention(text: str, bot_username: str) -> str:
    return text.replace(f"@{bot_username}", "").strip() or text


class TelegramConnector:
    name = CHANNEL

    def __init__(
        self, pipeline: Callable[[], Pipeline], settings: TelegramSettings, token: str, webhook_secret: str | None
    ) -> None:
        self._pipeline = pipeline
        self._settings = settings
        self._webhook_secret = webhook_secret
        builder = ApplicationBuilder().token(token).base_url(settings.base_url).concurrent_updates(True)
        if settings.mode == "webhook":
            builder = builder.updater(None)  # updates arrive through our own HTTP route
        self.application: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self.application.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, self._on_message)
        )
        self.application.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND, self._on_command))
        self.application.add_handler(CallbackQueryHandler(self._on_quick_reply, pattern=f"^{QUICK_REPLY_PREFIX}"))
        self._started = False
        # Why polling stopped after start-up, if it did. python-telegram-bot retries network and server
        # errors by itself but gives up on a token revoked while running.
        self.failure: str | None = None

    async def start(self) -> None:
        try:
            await self.application.initialize()  # getMe: proves the token works
        except InvalidToken as err:
            raise ChannelError(f"telegram: the token in {TOKEN_ENV} was rejected ({err.message})") from err
        except (NetworkError, TimedOut) as err:
            raise ChannelError(f"telegram: cannot reach the Bot API at {self._settings.base_url}: {err}") from err
        await self.application.start()
        try:
            if self._settings.mode == "polling":
                assert self.application.updater is not None  # built with an updater in polling mode
                before = asyncio.all_tasks()
                await self.application.updater.start_polling(
                    timeout=dt.timedelta(seconds=self._settings.poll_timeout), error_callback=_log_polling_error
                )
                polling = _polling_task(asyncio.all_tasks() - before)
                if polling is not None:
                    polling.add_done_callback(self._polling_ended)
            else:
                await self.application.bot.set_webhook(
                    url=str(self._settings.webhook_url),
                    secret_token=self._webhook_secret,
                    allowed_updates=Update.ALL_TYPES,
                )
        except BaseException:
            # Refused (a webhook URL the Bot API will not call, say): the channel stays off, so nothing of it
            # may keep running in the background.
            await self._close_application()
            raise
        self._started = True
        log.info("telegram: running as @%s (%s)", self.application.bot.username, self._settings.mode)

    def _polling_ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return  # stopped on purpose
        error = task.exception()
        why = f"the token in {TOKEN_ENV} was rejected" if isinstance(error, InvalidToken) else repr(error)
        self._fail(f"polling stopped: {why}")

    def _fail(self, why: str) -> None:
        if self.failure is not None:
            return  # the first reason is the one to act on
        self.failure = f"telegram: {why} (Telegram is off until the server restarts)"
        log.error("%s", self.failure)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._close_application()

    async def _close_application(self) -> None:
        if self.application.updater is not None and self.application.updater.running:
            await self.application.updater.stop()
        await self.application.stop()
        await self.application.shutdown()

    async def feed_webhook(self, payload: Mapping[str, Any]) -> None:
        """Queue one update received on the webhook route; processing happens in the application."""
        update = Update.de_json(dict(payload), self.application.bot)
        await self.application.update_queue.put(update)

    def verify_secret(self, header: str | None) -> bool:
        if self._webhook_secret is None:
            return True
        return header is not None and hmac.compare_digest(header, self._webhook_secret)

    # -- handlers ---------------------------------------------------------------------------------

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.text is None or message.from_user is None or message.from_user.is_bot:
            return
        bot = self.application.bot
        if not addressed_to_bot(message, bot.id, bot.username):
            return
        text = without_mention(message.text, bot.username)
        await self._answer(message.chat, message.from_user.id, text, f"telegram:{message.chat.id}:{message.id}")

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.text is None or message.from_user is None or message.from_user.is_bot:
            return
        command = message.text.split()[0].split("@")[0].lower()
        if command == "/start":
            # A new chat opens with a greeting, answered like any other greeting.
            await self._answer(message.chat, message.from_user.id, "hello", f"telegram:{message.chat.id}:{message.id}")

    async def _on_quick_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.message is None or query.from_user is None:
            return
        await query.answer()  # stops the button's loading spinner
        data = query.data or ""
        label = _pressed_label(query.message, data)
        if label is None or not isinstance(query.message, TgMessage):
            return
        pressed = _button_place(data)
        if pressed is not None:
            label = await self._pipeline().store.suggestion(*pressed, CHANNEL) or label
        await self._answer(query.message.chat, query.from_user.id, label, f"telegram:cb:{query.id}")

    async def _answer(self, chat: Chat, user_id: int, text: str, client_message_id: str) -> None:
        message = Message(
            conversation_id=conversation_id_for(chat, user_id),
            channel=CHANNEL,
            user_id=str(user_id),
            text=text,
            metadata={"chat_id": str(chat.id), "chat_type": str(chat.type)},
            client_message_id=client_message_id,
        )
        typing = asyncio.create_task(self._keep_typing(chat.id))
        try:
            exchange = await self._pipeline().exchange(message)
        finally:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
        if exchange.repeated:
            log.info("telegram: duplicate update %s answered before; not sending again", client_message_id)
            return
        await self._send_reply(chat.id, exchange.reply, exchange.bot_turn_id)

    async def _keep_typing(self, chat_id: int) -> None:
        while True:
            with contextlib.suppress(TelegramError):
                await self.application.bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(TYPING_REFRESH_SECONDS)

    async def _send_reply(self, chat_id: int, reply: Reply, bot_turn_id: int) -> None:
        pieces = split_html_safe(reply)
        for index, piece in enumerate(pieces):
            markup = quick_reply_keyboard(reply, bot_turn_id) if index == len(pieces) - 1 else None

            async def send(piece: str = piece, markup: InlineKeyboardMarkup | None = markup) -> object:
                return await self.application.bot.send_message(
                    chat_id, piece, parse_mode=ParseMode.HTML, reply_markup=markup, disable_web_page_preview=True
                )

            if not await self._with_retries(send, chat_id):
                return  # the reply stays in the store; the failure is logged

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


def _pressed_label(message: object, data: str) -> str | None:
    markup = getattr(message, "reply_markup", None)
    if not isinstance(markup, InlineKeyboardMarkup):
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


def _button_place(data: str) -> tuple[int, int] | None:
    """(bot turn id, suggestion index) from a button's callback data; None for buttons that name no turn."""
    turn, _, index = data.removeprefix(QUICK_REPLY_PREFIX).partition(":")
    return (int(turn), int(index)) if turn.isdigit() and index.isdigit() else None


def _polling_task(started: set[asyncio.Task[Any]]) -> asyncio.Task[Any] | None:
    """Among the tasks `start_polling` just started, the one that polls (python-telegram-bot keeps it
    private, but names it)."""
    return next((t for t in started if t.get_name() == "Updater:start_polling:polling_task"), None)


def _log_polling_error(error: TelegramError) -> None:
    log.warning("telegram: polling error (python-telegram-bot retries): %s", error)


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


def telegram_webhook_router(connector: Callable[[], TelegramConnector | None]) -> APIRouter:
    router = APIRouter()

    @router.post("/telegram/webhook", include_in_schema=False)
    async def webhook(request: Request) -> dict[str, bool]:
        current = connector()
        if current is None:
            raise HTTPException(404, "telegram webhook is not enabled")
        if not current.verify_secret(request.headers.get(SECRET_HEADER)):
            raise HTTPException(403, "bad secret token")
        try:
            payload = await request.json()
        except ValueError as err:
            raise HTTPException(400, "body is not JSON") from err
        await current.feed_webhook(payload)
        return {"ok": True}

    return router
