"""The fine-tuning set: what the dialogue model should write, in exactly the prompts it sees live.

Every example is built with the bot's own prompt builders (`bot.llm.grounding`, the operator's
`prompts/`) over the bot's own retrieval, so training and serving never drift apart:

- FAQ questions and alternates: the answer prompt with the passages retrieval gives for that phrasing
  (the entry first, as the engine puts a confident answer), answered with the entry's answer citing [1];
- policy sections' questions: the section's text, citing [1];
- out-of-scope examples: the answer prompt over whatever retrieval found, answered with the not-sure
  reply and no citation (the decline);
- phrasings the engine is unsure about among several topics, and the tags several FAQ entries share
  ("payments", standing for a vague message): the clarify task, answered with a question naming the
  topics;
- entries marked for a person: the handoff task over the conversation, answered with the handoff message.

Examples are split by knowledge item (an FAQ entry is wholly in training or wholly held out), by a hash of
the item id and the seed, so the split is the same on every machine and for every run with that seed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import convert_to_openai_messages

from bot.answering.policy import Decision, DecisionKind, ResponsePolicy
from bot.config import Config, LLMSettings
from bot.knowledge.model import SENTENCE_END, FaqEntry, KnowledgeItem, OutOfScopeGroup, Passage
from bot.llm.grounding import answer_context, answer_messages, clarify_options, options_list, task_messages, transcript
from bot.llm.prompts import PromptLibrary
from bot.retrieval.index import Hit

BRIEF_SENTENCES = 4  # the system prompt's "at most four sentences"


@dataclass(frozen=True)
class Example:
    item: str  # the split unit: a knowledge item id
    source: str  # faq | passage | decline | clarify | handoff | conversation
    messages: tuple[dict[str, str], ...]  # chat format: role, content; the last is the assistant's

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "source": self.source, "messages": list(self.messages)}


def read_examples(path: Path) -> list[Example]:
    """A `train.jsonl` or `held_out.jsonl` as written; a line that is not an example is an error naming it."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"])
            examples.append(Example(str(row["item"]), str(row["source"]), messages))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a dataset line ({err})") from err
    return examples


def balanced(examples: Sequence[Example], floor: float) -> list[Example]:
    """The examples, with each source that has fewer than `floor` of them repeated up to that share.

    Declines, clarifying questions and handoffs are a few percent of a knowledge base's examples; a short
    run would barely see them, and the adapter would learn to answer everything. Repeating the rare ones
    (in their order) is the usual remedy; the common sources are left as they are.
    """
    by_source: dict[str, list[Example]] = {}
    for example in examples:
        by_source.setdefault(example.source, []).append(example)
    wanted = int(floor * len(examples))
    out = list(examples)
    for rows in by_source.values():
        if len(rows) < wanted:
            out += [rows[i % len(rows)] for i in range(wanted - len(rows))]
    return out


@dataclass
class Dataset:
    train: list[Example] = field(default_factory=list)
    held_out: list[Example] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for name, examples in (("train", self.train), ("held_out", self.held_out)):
            lines = (json.dumps(e.to_json(), ensure_ascii=False) for e in examples)
            (out / f"{name}.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        (out / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8")


def brief(text: str, sentences: int = BRIEF_SENTENCES) -> str:
    """The first few sentences of a knowledge text, as the system prompt asks answers to be."""
    parts = SENTENCE_END.split(" ".join(text.split()))
    return " ".join(parts[:sentences])


def is_held_out(item: str, seed: int, share: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def content_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes under `root` (the knowledge base or the prompts)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class ExampleBuilder:
    """Examples from knowledge items, through the live policy and prompts."""

    def __init__(self, config: Config, policy: ResponsePolicy, prompts: PromptLibrary) -> None:
        self._config = config
        self._policy = policy
        self._prompts = prompts

    def from_items(self, items: Sequence[KnowledgeItem]) -> list[Example]:
        examples: list[Example] = []
        for item in items:
            if isinstance(item, FaqEntry) and item.action is None:
                examples += self._answers(item, item.utterances(), brief(item.answer))
                if item.handoff:
                    examples += self._handoffs(item, item.utterances())
            elif isinstance(item, Passage) and item.questions:
                examples += self._answers(item, item.questions, brief(item.text))
                if item.handoff:
                    examples += self._handoffs(item, item.questions)
            elif isinstance(item, OutOfScopeGroup):
                examples += [self._decline(item.id, example) for example in item.examples]
        return examples + self._vague(items)

    def _vague(self, items: Sequence[KnowledgeItem]) -> list[Example]:
        """A tag several FAQ entries share ("payments") stands for a vague message: the clarify task over the
        tagged topics retrieval ranks first for it."""
        tagged: dict[str, set[str]] = {}
        for item in items:
            if isinstance(item, FaqEntry) and item.action is None:
                for tag in item.tags:
                    tagged.setdefault(tag, set()).add(item.id)
        examples = []
        for tag, ids in sorted(tagged.items()):
            if len(ids) < 2:
                continue
            text = tag.replace("-", " ")
            ranked = [hit for hit in self._policy.decide(text).candidates if hit.item_id in ids]
            clarify = self._clarify(f"tag:{tag}", text, ranked)
            examples += [clarify] if clarify is not None else []
        return examples

    def _answers(self, item: FaqEntry | Passage, phrasings: Sequence[str], answer: str) -> list[Example]:
        examples = []
        for phrasing in phrasings:
            decision = self._policy.decide(phrasing)
            target = next((h for h in decision.candidates if h.item_id == item.id), None)
            if target is None:
                continue  # retrieval does not reach it: nothing the model would be shown live
            if decision.kind is DecisionKind.NOT_SURE:  # live, the model would be asked to clarify
                clarify = self._clarify(item.id, phrasing, decision.candidates)
                examples += [clarify] if clarify is not None else []
            hits = context_for(self._config, decision, first=target)
            chat = answer_messages(self._prompts, self._config.bot_name, phrasing, hits, [])
            examples.append(chat_example(item.id, item.kind, chat, f"{answer} [1]"))
        return examples

    def _decline(self, item: str, text: str) -> Example:
        decision = self._policy.decide(text)
        hits = list(decision.candidates[: llm_setting(self._config, "context_passages")])
        chat = answer_messages(self._prompts, self._config.bot_name, text, hits, [])
        return chat_example(item, "decline", chat, self._config.messages.not_sure)

    def _clarify(self, item: str, text: str, candidates: Sequence[Hit]) -> Example | None:
        """The clarify task as the model responder sends it, answered with a question naming the topics."""
        titles = clarify_options(candidates, self._config.answering.suggestion_min_score)
        if len(titles) < 2 or not self._prompts.available("clarify"):
            return None
        shown = titles[: self._config.answering.suggestions]
        chat = task_messages(
            self._prompts, "clarify", self._config.bot_name, question=text, options=options_list(shown)
        )
        quoted = [f"“{title}”" for title in shown]
        question = "Which of these do you mean: " + ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
        return chat_example(item, "clarify", chat, question)

    def _handoffs(self, item: FaqEntry | Passage, phrasings: Sequence[str]) -> list[Example]:
        if not self._prompts.available("handoff"):
            return []
        examples = []
        for phrasing in phrasings:
            chat = task_messages(
                self._prompts, "handoff", self._config.bot_name, transcript=transcript([], latest=phrasing)
            )
            examples.append(chat_example(item.id, "handoff", chat, self._config.messages.handoff))
        return examples


def context_for(config: Config, decision: Decision, first: Hit | None = None) -> list[Hit]:
    """The passages the model responder shows for a decision, the decided item (or `first`) leading."""
    floor = config.answering.suggestion_min_score
    return answer_context(first or decision.answer, decision.candidates, floor, llm_setting(config, "context_passages"))


def llm_setting(config: Config, name: str) -> int:
    """A number from the `llm:` section, or its default when no model is configured yet."""
    value = getattr(config.llm, name) if config.llm is not None else LLMSettings.model_fields[name].default
    return int(value)


def chat_example(item: str, source: str, chat: list[BaseMessage], reply: str) -> Example:
    messages = convert_to_openai_messages([*chat, AIMessage(reply)])
    return Example(item, source, tuple({"role": m["role"], "content": str(m["content"])} for m in messages))


def split(examples: Iterable[Example], seed: int, share: float) -> tuple[list[Example], list[Example]]:
    train: list[Example] = []
    held_out: list[Example] = []
    for example in examples:
        (held_out if is_held_out(example.item, seed, share) else train).append(example)
    return train, held_out


def manifest(
    train: Sequence[Example], held_out: Sequence[Example], knowledge: Path, prompts: Path, seed: int, share: float,
    redactions: Counter[str],
) -> dict[str, Any]:  # fmt: skip
    return {
        "format": "chat jsonl: {item, source, messages: [{role, content}]}; the last message is the target",
        "knowledge_sha256": content_hash(knowledge),
        "prompts_sha256": content_hash(prompts),
        "seed": seed,
        "held_out_share": share,
        "split": "by item: sha256(seed:item) < share",
        "train": len(train),
        "held_out": len(held_out),
        "held_out_items": sorted({e.item for e in held_out}),
        "sources": {
            "train": dict(Counter(e.source for e in train)),
            "held_out": dict(Counter(e.source for e in held_out)),
        },
        "redacted": dict(redactions),
    }


def build_dataset(
    config: Config,
    policy: ResponsePolicy,
    items: Sequence[KnowledgeItem],
    share: float,
    seed: int,
    approved: Sequence[Example] = (),
    redacted: Counter[str] | None = None,
) -> Dataset:
    """The knowledge base's examples and the approved conversations' (already redacted), split by item."""
    prompts = PromptLibrary(config.prompts.path)
    if prompts.problems:
        raise DatasetError("; ".join(str(p) for p in prompts.problems))
    examples = ExampleBuilder(config, policy, prompts).from_items(items) + list(approved)
    train, held_out = split(examples, seed, share)
    if not train or not held_out:
        raise DatasetError(
            f"{len(examples)} examples gave {len(train)} for training and {len(held_out)} held out: "
            "use a held-out share that leaves both sides some items"
        )
    counts = redacted if redacted is not None else Counter()
    return Dataset(
        train, held_out, manifest(train, held_out, config.knowledge.path, config.prompts.path, seed, share, counts)
    )


class DatasetError(ValueError):
    """The training set cannot be built as asked (a broken prompt, an empty side of the split)."""
