"""What the model is shown and how its answer is checked against it.

The customer's text and the knowledge text are data. Both are inserted inside tagged sections, and
any tag that could close or open such a section is removed from them first, so neither can pose as
instructions. The answer must cite the numbered passages it used; one that cites none is not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages

from bot.llm.prompts import PromptLibrary
from bot.retrieval.index import Hit
from bot.storage.turns import Turn

_SECTION_TAG = re.compile(r"<\s*/?\s*(customer_message|context|transcript)\b[^>]*>", re.IGNORECASE)
_CITATION = re.compile(r"\s*\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def as_data(text: str) -> str:
    """Text from customers or knowledge files, made safe to place inside a tagged section."""
    return _SECTION_TAG.sub("", text)


def numbered_context(hits: Sequence[Hit]) -> str:
    blocks = []
    for number, hit in enumerate(hits, start=1):
        blocks.append(f"[{number}] {as_data(hit.title)} (source: {hit.file})\n{as_data(hit.body)}")
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class CitedAnswer:
    text: str  # the answer without citation markers
    cited: tuple[Hit, ...]  # passages it cited, in order of first citation


def read_citations(answer: str, hits: Sequence[Hit]) -> CitedAnswer:
    """Pull `[n]` markers out of an answer; only numbers of passages that were shown count."""
    cited: list[Hit] = []
    for match in _CITATION.finditer(answer):
        for number in match.group(1).split(","):
            index = int(number) - 1
            if 0 <= index < len(hits) and hits[index] not in cited:
                cited.append(hits[index])
    text = _CITATION.sub("", answer).strip()
    return CitedAnswer(text, tuple(cited))


def history_messages(turns: Sequence[Turn], max_tokens: int) -> list[BaseMessage]:
    """Recent turns as chat messages, newest kept first within the token budget, starting with the customer."""
    messages: list[BaseMessage] = [
        HumanMessage(as_data(turn.text)) if turn.role == "user" else AIMessage(turn.text) for turn in turns
    ]
    if not messages or max_tokens <= 0:
        return []
    return trim_messages(
        messages,
        max_tokens=max_tokens,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
        end_on="ai",
        allow_partial=False,
    )


def transcript(turns: Sequence[Turn], latest: str | None = None) -> str:
    """The conversation as lines for a prompt; `latest`: the customer's message being answered, not stored yet
    as far as the caller's turns go."""
    lines = [f"{'Customer' if t.role == 'user' else 'Bot'}: {as_data(t.text)}" for t in turns]
    if latest is not None:
        lines.append(f"Customer: {as_data(latest)}")
    return "\n".join(lines)


def answer_context(lead: Hit | None, candidates: Sequence[Hit], min_score: float, limit: int) -> list[Hit]:
    """The passages shown with an answer: the decided item first, then the other candidates good enough to be
    suggested (`min_score`), `limit` in all. An item is shown once, whatever score each copy carries."""
    chosen = [lead] if lead is not None else []
    others = [h for h in candidates if (lead is None or h.item_id != lead.item_id) and h.score >= min_score]
    return (chosen + others)[:limit]


def clarify_options(candidates: Sequence[Hit], min_score: float) -> list[str]:
    """The topics a clarifying question may offer: the candidates' titles good enough to be suggested."""
    return [hit.title for hit in candidates if hit.score >= min_score]


def options_list(options: Sequence[str]) -> str:
    """Topics as the clarify prompt lists them."""
    return "\n".join(f"- {option}" for option in options)


def answer_messages(
    prompts: PromptLibrary, bot_name: str, question: str, hits: Sequence[Hit], history: Sequence[BaseMessage]
) -> list[BaseMessage]:
    return [
        SystemMessage(prompts.render("system", bot_name=bot_name)),
        *history,
        HumanMessage(
            prompts.render("answer", bot_name=bot_name, context=numbered_context(hits), question=as_data(question))
        ),
    ]


def task_messages(prompts: PromptLibrary, name: str, bot_name: str, **variables: str) -> list[BaseMessage]:
    """A one-off task (clarify, handoff, summary) under the same system prompt."""
    return [
        SystemMessage(prompts.render("system", bot_name=bot_name)),
        HumanMessage(prompts.render(name, bot_name=bot_name, **variables)),
    ]
