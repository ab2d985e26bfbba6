"""Suggestion buttons' data, the same codec on every chat app: which stored reply, which of its suggestions.

A button names the bot turn that offered it and the suggestion's place in that turn, since the apps cap
button data (Telegram at 64 bytes) below what a suggestion may hold; the full text is read back from the
store. The data comes back from the app as the customer's client sent it, so it is read strictly (ASCII
digits, in range) and looked up only within the conversation it arrives in.
"""

from __future__ import annotations

import re

from bot.storage.store import MAX_TURN_ID

_PLACE = re.compile(r"(?P<turn>[0-9]{1,19}):(?P<index>[0-9]{1,3})")


def button_data(prefix: str, bot_turn_id: int, index: int) -> str:
    return f"{prefix}{bot_turn_id}:{index}"


def button_template(prefix: str) -> str:
    """The pattern of this codec's data under `prefix`, with the groups `turn` and `index` (for discord.py's
    dynamic items, which match a clicked button's id against it)."""
    return re.escape(prefix) + _PLACE.pattern


def read_button(data: str, prefix: str) -> tuple[int, int] | None:
    """(bot turn id, suggestion index) from a button's data; None for anything this codec did not write."""
    if not data.startswith(prefix):
        return None
    found = _PLACE.fullmatch(data.removeprefix(prefix))
    if found is None:
        return None
    turn = int(found["turn"])
    return (turn, int(found["index"])) if 0 < turn <= MAX_TURN_ID else None
