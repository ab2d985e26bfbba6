"""A summary for the agent who takes over, built from the transcript when no dialogue model wrote one:
the questions asked, what the bot answered (and from which source), and why it handed over."""

from __future__ import annotations

from bot.conversation.state import Owner, Ownership, Trigger
from bot.storage.turns import Turn
from bot.types import AnsweredBy

_WHY = {
    str(Trigger.CUSTOMER_REQUEST): "the customer asked for a person",
    str(Trigger.TALK_BUTTON): "the customer pressed Talk to a person",
    str(Trigger.NOT_SURE): "the bot was not sure of its answers several times in a row",
    str(Trigger.FRUSTRATION): "the customer sounded frustrated",
    str(Trigger.MARKED_ENTRY): "the answer came from an entry marked for a person",
    str(Trigger.AGENT_PULL): "an agent took it over from the bot",
}
_MAX_QUESTION_CHARS = 200
_MAX_LINES = 8


def transcript_summary(turns: list[Turn], ownership: Ownership) -> str:
    by_id = {turn.id: turn for turn in turns}
    lines: list[str] = []
    asked = 0
    for turn in turns:
        if turn.role != "bot" or turn.reply_to is None or turn.reply_to not in by_id:
            continue
        question = _short(by_id[turn.reply_to].text)
        if turn.citations:
            answer = "answered from " + ", ".join(f"{c['title']} ({c['source']}:{c['line']})" for c in turn.citations)
        elif turn.answered_by == str(AnsweredBy.HUMAN):
            continue
        else:
            answer = f"not answered ({turn.reason or 'fallback'})"
        asked += 1
        lines.append(f'- "{question}": {answer}')
    lines = lines[-_MAX_LINES:]
    head = f"{asked} question{'s' if asked != 1 else ''} to the bot" + (":" if lines else ".")
    parts = [head, *lines]
    if ownership.state is not Owner.BOT and ownership.trigger is not None:
        parts.append(f"Handed over because {_WHY.get(ownership.trigger, ownership.trigger)}.")
    if ownership.slots:
        parts.append("Left: " + ", ".join(f"{k} {v}" for k, v in sorted(ownership.slots.items())) + ".")
    return "\n".join(parts)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_QUESTION_CHARS else text[: _MAX_QUESTION_CHARS - 1] + "…"
