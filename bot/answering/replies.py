"""Turns a decision into the words the customer sees."""

from __future__ import annotations

from bot.answering.guard import InputProblem
from bot.answering.policy import Decision, DecisionKind
from bot.answering.smalltalk import SmallTalk
from bot.config import AnsweringSettings, MessagesSettings
from bot.retrieval.index import Hit
from bot.types import AnsweredBy, Citation, Message, MessageKind, Reply


def citation_for(hit: Hit) -> Citation:
    return Citation(id=hit.item_id, kind=hit.kind, title=hit.title, source=hit.file, line=hit.line)


def compose_reply(decision: Decision, messages: MessagesSettings, settings: AnsweringSettings) -> Reply:
    kind = decision.kind
    if kind is DecisionKind.ANSWER and decision.answer is not None:
        hit = decision.answer
        return Reply(
            text=hit.body,
            answered_by=AnsweredBy.KNOWLEDGE,
            confidence=round(hit.score, 4),
            citations=(citation_for(hit),),
            handoff=hit.handoff,  # an entry marked for a person: answered, then handed over (the router)
            quick_replies=() if hit.handoff else tuple(related.title for related in decision.related),
            source_id=hit.item_id,
            reason=hit.kind,
        )
    if kind is DecisionKind.SMALLTALK:
        text = {
            SmallTalk.GREETING: messages.greeting,
            SmallTalk.THANKS: messages.thanks,
            SmallTalk.GOODBYE: messages.goodbye,
        }[decision.smalltalk or SmallTalk.GREETING]
        return Reply(text=text, answered_by=AnsweredBy.FALLBACK, reason=str(decision.smalltalk))
    if kind is DecisionKind.HANDOFF:
        return Reply(text=messages.handoff, answered_by=AnsweredBy.FALLBACK, handoff=True, reason="handoff")
    if kind is DecisionKind.INVALID:
        problem = decision.problem or InputProblem.UNREADABLE
        if problem is InputProblem.TOO_LONG:
            text = messages.too_long.format(length=decision.original_length, limit=settings.max_message_chars)
        elif problem is InputProblem.EMPTY:
            text = messages.empty
        else:
            text = messages.unreadable
        return Reply(text=text, answered_by=AnsweredBy.FALLBACK, reason=str(problem))
    if kind is DecisionKind.OUT_OF_SCOPE:
        return _out_of_scope(decision, messages)
    if kind is DecisionKind.CLARIFY and decision.choices:
        return _clarify(decision, messages)
    return _not_sure(decision, messages, settings)


def _out_of_scope(decision: Decision, messages: MessagesSettings) -> Reply:
    group = decision.declined_by
    return Reply(
        text="\n".join(((group.body if group else "") or messages.out_of_scope, messages.offer_human)),
        answered_by=AnsweredBy.FALLBACK,
        confidence=round(decision.confidence, 4),
        quick_replies=(messages.talk_to_human_button,),
        source_id=group.item_id if group else None,
        reason="out_of_scope",
    )


def _clarify(decision: Decision, messages: MessagesSettings) -> Reply:
    """ "Do you mean: A, B or C?" with each topic a tap away (a tapped title is answered from its topic)."""
    titles = tuple(hit.title for hit in decision.choices)
    return Reply(
        text="\n".join((messages.clarify, *(f"- {title}" for title in titles))),
        answered_by=AnsweredBy.FALLBACK,
        confidence=round(decision.confidence, 4),
        quick_replies=(*titles, messages.talk_to_human_button),
        reason="clarify",
    )


def _not_sure(decision: Decision, messages: MessagesSettings, settings: AnsweringSettings) -> Reply:
    suggestions = [hit.title for hit in decision.candidates if hit.score >= settings.suggestion_min_score][
        : settings.suggestions
    ]
    lines = [messages.not_sure]
    if suggestions:
        lines.append(messages.suggestions_intro)
        lines.extend(f"- {title}" for title in suggestions)
    lines.append(messages.offer_human)
    return Reply(
        text="\n".join(lines),
        answered_by=AnsweredBy.FALLBACK,
        confidence=round(decision.confidence, 4),
        quick_replies=(*suggestions, messages.talk_to_human_button),
        reason="not_sure",
    )


def notice_reply(message: Message, messages: MessagesSettings) -> Reply:
    """The reply to something that is not a question in words: an attachment, /help, an unknown command."""
    if message.kind is MessageKind.NOT_TEXT:
        attachment = message.metadata.get("attachment", "message")
        return Reply(text=messages.not_text.format(attachment=attachment), answered_by=AnsweredBy.FALLBACK,
                     reason="not_text")  # fmt: skip
    if message.kind is MessageKind.HELP:
        return Reply(text=messages.help, answered_by=AnsweredBy.FALLBACK, reason="help")
    command = message.text.split()[0] if message.text.split() else message.text
    return Reply(text=messages.unknown_command.format(command=command), answered_by=AnsweredBy.FALLBACK,
                 reason="unknown_command")  # fmt: skip


def error_reply(messages: MessagesSettings) -> Reply:
    return Reply(text=messages.error, answered_by=AnsweredBy.FALLBACK, reason="error")
