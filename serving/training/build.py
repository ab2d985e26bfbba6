"""The whole fine-tuning set: the knowledge base's examples plus the approved conversations' (redacted)."""

from __future__ import annotations

import os
from collections import Counter

import anyio

from bot.answering.policy import ResponsePolicy
from bot.config import Config
from bot.knowledge.loader import read_knowledge_dir, vet
from bot.knowledge.model import Form
from bot.llm.prompts import PromptLibrary
from bot.storage.store import ConversationStore
from serving.training.conversations import Approved, approved_examples
from serving.training.dataset import Dataset, DatasetError, build_dataset
from serving.training.redaction import Redactor

__all__ = ["DatasetError", "build_from_sources"]


def build_from_sources(config: Config, policy: ResponsePolicy, share: float, seed: int) -> tuple[Dataset, Counter[str]]:
    """The dataset, and the approved replies that are not examples (by why)."""
    items = [item for file in vet(read_knowledge_dir(config.knowledge.path)).accepted for item in file.items]
    # Order numbers look like whatever the forms collect them as.
    patterns = tuple(
        slot.pattern for item in items if isinstance(item, Form) for slot in item.slots if slot.pattern is not None
    )
    redactor = Redactor(order_patterns=tuple(dict.fromkeys(patterns)))
    prompts = PromptLibrary(config.prompts.path)

    async def read_store() -> Approved:
        if config.store.url is None and not config.store.path.exists():
            return Approved([], Counter())
        store = await ConversationStore.from_settings(config.store, os.environ)
        try:
            return await approved_examples(store, config, policy, prompts, redactor)
        finally:
            await store.close()

    approved = anyio.run(read_store)
    dataset = build_dataset(config, policy, items, share, seed, approved.examples, redactor.counts)
    return dataset, approved.skipped
