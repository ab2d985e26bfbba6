"""Builds the engine from configuration and runs its long-lived parts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from bot.answering.policy import ResponsePolicy
from bot.config import Config
from bot.conversation.state import Staffing
from bot.knowledge.sync import KnowledgeSync
from bot.llm.client import ChatModel
from bot.llm.prompts import PromptLibrary
from bot.llm.responder import ModelResponder
from bot.pipeline import KnowledgeResponder, Pipeline, Responder
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex, SyncReport
from bot.storage.store import ConversationStore
from bot.types import Message, Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """Everything needed to decide answers for one knowledge directory."""

    config: Config
    index: KnowledgeIndex
    sync: KnowledgeSync
    policy: ResponsePolicy


def build_engine(
    config: Config,
    embedder: Embedder | None = None,
    knowledge_dir: Path | None = None,
    index_path: Path | None = None,
) -> Engine:
    """Open the index (not yet synced). Defaults come from config; overrides serve `bot eval --knowledge`."""
    embedder = embedder or Embedder(config.index.embedding_model, threads=config.index.threads)
    index = KnowledgeIndex.open(index_path or config.index.path, config.index.collection, embedder)
    policy = ResponsePolicy(index, config.answering, config.messages.talk_to_human_button)
    return Engine(config, index, KnowledgeSync(knowledge_dir or config.knowledge.path, index), policy)


def eval_index_path(config: Config, knowledge_dir: Path) -> Path:
    """A private index per evaluated directory, beside (never inside) the configured one; reused across runs."""
    digest = hashlib.sha256(str(knowledge_dir.resolve()).encode()).hexdigest()[:12]
    return config.index.path.parent / "eval-indexes" / digest


@dataclass(frozen=True)
class Bot:
    engine: Engine
    store: ConversationStore
    pipeline: Pipeline
    startup_sync: SyncReport
    model: ModelResponder | None = None  # set when a dialogue model is configured


@asynccontextmanager
async def running_bot(
    config: Config,
    embedder: Embedder | None = None,
    watch: bool = False,
    responder: Responder | None = None,
    environ: Mapping[str, str] | None = None,
    staffing: Callable[[], Staffing] = lambda: Staffing.NO_AGENTS,
    notify: Callable[[str, str], None] = lambda conversation_id, kind: None,
    on_reply: Callable[[Message, Reply, float], None] = lambda message, reply, seconds: None,
) -> AsyncIterator[Bot]:
    """A ready bot: index synced with the knowledge directory, store open, and (optionally) live reload."""
    engine = build_engine(config, embedder)
    await anyio.to_thread.run_sync(engine.index.embedder.load)
    report = await anyio.to_thread.run_sync(engine.sync.run)
    store = await ConversationStore.open(config.store.path)
    model = None
    if responder is None and config.llm is not None:
        model = model_responder(config, engine, environ)
    responder = responder or model or KnowledgeResponder(config.messages, config.answering)
    pipeline = Pipeline(
        engine.policy, store, responder, config.messages, config.handoff, staffing, notify, on_reply, summariser=model
    )
    try:
        async with anyio.create_task_group() as tasks:
            stop = anyio.Event()
            if watch:
                tasks.start_soon(engine.sync.watch, stop, config.knowledge.watch_debounce_ms)
                log.info("watching %s for edits", engine.sync.directory)
                if model is not None:
                    tasks.start_soon(model.prompts.watch, stop, config.knowledge.watch_debounce_ms)
            try:
                yield Bot(engine, store, pipeline, report, model)
            finally:
                stop.set()
                await pipeline.aclose()
    finally:
        await store.close()
        await anyio.to_thread.run_sync(engine.index.close)


def model_responder(config: Config, engine: Engine, environ: Mapping[str, str] | None) -> ModelResponder:
    assert config.llm is not None
    prompts = PromptLibrary(config.prompts.path)
    log.info("dialogue model: %s at %s", config.llm.model, config.llm.base_url)
    return ModelResponder(
        ChatModel(config.llm, environ),
        prompts,
        engine.policy.clearance,
        config.bot_name,
        config.messages,
        config.answering,
    )
