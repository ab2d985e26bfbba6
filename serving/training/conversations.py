"""Approved replies from the conversation store as training examples, personal data redacted first.

Only what an operator approved (`bot review --approve`) is read. A reply is an example when the model
could have written it: an answer from the knowledge base or the model, or a person's reply after a
handoff (the most telling: what the bot could not do). Each is placed in the answer prompt the model
would have been given for the customer's message: the turns before it as history, and the passages
retrieval finds now. The customer's words, the history and the reply itself are redacted
(`serving.training.redaction`), with the conversation's collected slots as known values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.answering.policy import ResponsePolicy
from bot.config import Config
from bot.llm.grounding import answer_messages, history_messages
from bot.llm.prompts import PromptLibrary
from bot.storage.store import ConversationStore
from bot.storage.turns import Turn
from bot.types import AnsweredBy
from serving.training.dataset import Example, chat_example, context_for, llm_setting
from serving.training.redaction import Redactor
from serving.training.support import supporting_passage

_TRAINABLE = {AnsweredBy.KNOWLEDGE, AnsweredBy.LLM, AnsweredBy.HUMAN}


@dataclass
class Approved:
    examples: list[Example]
    skipped: Counter[str]  # approved replies that are not examples, by why


async def approved_examples(
    store: ConversationStore, config: Config, policy: ResponsePolicy, prompts: PromptLibrary, redactor: Redactor
) -> Approved:
    result = Approved([], Counter())
    conversations = sorted({a.conversation_id for a in await store.approvals.all()})
    for conversation_id in conversations:
        approved = await store.approvals.approved_turns(conversation_id)
        turns = await store.turns(conversation_id, limit=100_000)
        slots = (await store.ledger.ownership(conversation_id)).slots
        known = [str(v) for v in slots.values() if isinstance(v, str)]
        names: list[str] = []  # a name the customer gave is taken out of the agent's "Sorry Jane!" too
        for turn in turns:
            if turn.role == "user":
                found = redactor.names_in(turn.text)
                names += found + [part for name in found for part in name.split()]
        for position, turn in enumerate(turns):
            if turn.role != "bot" or (approved is not None and turn.id not in approved):
                continue
            if turn.answered_by not in _TRAINABLE:
                result.skipped[f"answered_by {turn.answered_by}"] += 1
                continue
            example = _example(
                config, policy, prompts, redactor, conversation_id, turns[:position], turn, (known, names)
            )
            if example is None:
                result.skipped["no customer message before it"] += 1
            else:
                result.examples.append(example)
    return result


def _example(
    config: Config,
    policy: ResponsePolicy,
    prompts: PromptLibrary,
    redactor: Redactor,
    conversation_id: str,
    before: Sequence[Turn],
    reply: Turn,
    known: tuple[Sequence[str], Sequence[str]],
) -> Example | None:
    """`known`: the conversation's slot values and the names its customer gave."""
    # The customer's message: what they wrote since the previous reply (people often send several lines).
    start = len(before)
    while start > 0 and before[start - 1].role == "user":
        start -= 1
    asked = [t for t in before[start:] if t.role == "user" and t.text.strip()]
    if not asked:
        return None
    question = redactor.redact("\n".join(t.text for t in asked), *known)
    earlier = [replace(t, text=redactor.redact(t.text, *known)) for t in before[:start]]
    # As the model responder gives and trims it live (with the defaults when no model is configured yet).
    keep, budget = llm_setting(config, "history_turns"), llm_setting(config, "history_max_tokens")
    history = history_messages(earlier[-keep:], budget) if keep > 0 else []
    hits = context_for(config, policy.decide(question))
    text = redactor.redact(reply.text, *known)
    cited = [n for n, hit in enumerate(hits, start=1) if hit.item_id in {c.get("id") for c in reply.citations}]
    if not cited:
        supported = supporting_passage(text, hits)
        cited = [] if supported is None else [supported]
    target = f"{text} {''.join(f'[{n}]' for n in cited)}".strip()
    chat = answer_messages(prompts, config.bot_name, question, hits, history)
    source = "agent" if reply.answered_by == AnsweredBy.HUMAN else "conversation"
    return chat_example(f"conversation:{conversation_id}", source, chat, target)
