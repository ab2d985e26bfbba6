"""What a Telegram update means for the bot: a customer's message, a button press, or nothing to answer.

Every update a customer can send gets an answer: text; a photo or file with a caption (the caption is
the question); an edited message (answered again, as edited); /start (a greeting, keeping its deep-link
payload), /help, other commands (with words after them, those words are the question); and anything
else a person sends (stickers, voice notes, locations, contacts...), which gets an honest "I can only
read text". In groups only what is addressed to the bot counts: a mention, a reply to one of its
messages, or a command that names no other bot.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import CallbackQuery, Chat, MessageEntity, Update
from telegram import Message as TgMessage

from bot.types import Message, MessageKind

CHANNEL = "telegram"

# Message fields that carry something other than words, and how the bot names them to the customer.
ATTACHMENTS = (
    ("sticker", "sticker"),
    ("voice", "voice message"),
    ("video_note", "video message"),
    ("audio", "audio file"),
    ("video", "video"),
    ("animation", "animation"),
    ("photo", "photo"),
    ("document", "file"),
    ("location", "location"),
    ("venue", "place"),
    ("contact", "contact"),
    ("poll", "poll"),
    ("dice", "dice roll"),
    ("game", "game"),
    ("story", "story"),
)


@dataclass(frozen=True)
class Press:
    """A tap on one of the bot's buttons: `data` is the button's, as the customer's app sent it back."""

    query_id: str
    chat: Chat
    user_id: int
    data: str

    @property
    def conversation_id(self) -> str:
        return conversation_id_for(self.chat, self.user_id)


def conversation_id_for(chat: Chat, user_id: int) -> str:
    """One conversation per private chat; in groups, one per person in that group."""
    if chat.type == Chat.PRIVATE:
        return f"telegram:{chat.id}"
    return f"telegram:{chat.id}:{user_id}"


def read_update(update: Update, bot_id: int, bot_username: str) -> Message | Press | None:
    """The update as the engine sees it; None when there is nothing for the bot to answer."""
    if update.callback_query is not None:
        return _press(update.callback_query)
    message = update.message or update.edited_message
    if message is None or message.from_user is None or message.from_user.is_bot:
        return None
    if not addressed_to_bot(message, bot_id, bot_username):
        return None
    client_message_id = f"telegram:{message.chat.id}:{message.id}"
    if update.edited_message is not None:
        edited = message.edit_date.timestamp() if message.edit_date is not None else 0
        client_message_id += f":edited:{edited:.0f}"
    metadata = {"chat_id": str(message.chat.id), "chat_type": str(message.chat.type)}
    read = _content(message, bot_username)
    if read is None:
        return None
    kind, text, extra = read
    return Message(
        conversation_id=conversation_id_for(message.chat, message.from_user.id),
        channel=CHANNEL,
        user_id=str(message.from_user.id),
        text=text,
        metadata=metadata | extra,
        client_message_id=client_message_id,
        kind=kind,
    )


def _press(query: CallbackQuery) -> Press | None:
    chat = query.message.chat if query.message is not None else None
    if chat is None or query.from_user is None or query.from_user.is_bot:
        return None
    return Press(query.id, chat, query.from_user.id, query.data or "")


def _content(message: TgMessage, bot_username: str) -> tuple[MessageKind, str, dict[str, str]] | None:
    """(kind, text, extra metadata), or None for a service message (someone joined, a pin...)."""
    if message.text is not None:
        command = _command(message)
        if command is not None:
            return _read_command(*command, bot_username)
        return MessageKind.TEXT, without_mention(message.text, bot_username) or "hello", {}
    attachment = next((name for field, name in ATTACHMENTS if getattr(message, field, None)), None)
    if message.caption:
        caption = without_mention(message.caption, bot_username)
        if caption:
            return MessageKind.TEXT, caption, {"attachment": attachment or "attachment"}
    if attachment is None:
        return None
    return MessageKind.NOT_TEXT, f"[{attachment}]", {"attachment": attachment}


def _command(message: TgMessage) -> tuple[str, str | None, str] | None:
    """(command, the bot it names or None, the words after it) for a message that starts with a command."""
    text = message.text or ""
    entities = [e for e in message.entities if e.type == MessageEntity.BOT_COMMAND and e.offset == 0]
    if not entities or not text.startswith("/"):
        return None
    head = text[: entities[0].length]
    name, _, target = head.partition("@")
    return name.lower(), target or None, text[entities[0].length :].strip()


def _read_command(
    command: str, target: str | None, words: str, bot_username: str
) -> tuple[MessageKind, str, dict[str, str]] | None:
    if target is not None and target.casefold() != bot_username.casefold():
        return None  # /start@other_bot: another bot's command
    if command == "/start":
        # A new chat opens with a greeting; a deep link's payload (t.me/bot?start=PAYLOAD) is kept with it.
        return MessageKind.TEXT, "hello", {"start_payload": words} if words else {}
    if command == "/help":
        return MessageKind.HELP, "/help", {}
    if words:
        return MessageKind.TEXT, words, {"command": command}  # "/order where is it": the words are the question
    return MessageKind.UNKNOWN_COMMAND, command, {}


def addressed_to_bot(message: TgMessage, bot_id: int, bot_username: str) -> bool:
    """Private chats always; in groups, a mention of the bot, a reply to one of its messages, or a command."""
    if message.chat.type == Chat.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    entities = message.parse_entities() if message.text is not None else message.parse_caption_entities()
    for entity, text in entities.items():
        if entity.type == MessageEntity.MENTION and text.lstrip("@").casefold() == bot_username.casefold():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return True  # whether it names another bot is decided with the command
    return False


def without_mention(text: str, bot_username: str) -> str:
    """The text without the bot's own @mention ("" when the mention was all there was)."""
    return text.replace(f"@{bot_username}", "").strip()
