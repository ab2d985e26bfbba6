"""Builds the engine from configuration and runs its long-lived parts."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from bot.actions.client import ActionClient, ActionError
from bot.actions.forms import FormRunner
from bot.answering.policy import ResponsePolicy
from bot.config import Config, CoordinationSettings
from bot.conversation.state import Staffing
from bot.knowledge.sync import KnowledgeSync
from bot.llm.client import ChatModel
from bot.llm.prompts import PromptLibrary
from bot.llm.responder import ModelResponder
from bot.pipeline import KnowledgeResponder, Pipeline, Responder
from bot.retrieval.autotune import EncoderTuner, active_encoder, record_active
from bot.retrieval.chroma import IndexUnavailable
from bot.retrieval.embedding import Embedder, EncoderKind
from bot.retrieval.index import KnowledgeIndex, SyncReport
from bot.retrieval.models import BundledModel, model_folder
from bot.retrieval.onnx_encoder import default_cache_dir
from bot.storage.coordination import Coordination, CoordinationUnavailable, LocalCoordination
from bot.storage.store import ConversationStore
from bot.types import Message, Reply
from serving.action_server import ActionServerProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """Everything needed to decide answers for one knowledge directory."""

    config: Config
    index: KnowledgeIndex
    sync: KnowledgeSync
    policy: ResponsePolicy
    tuner: EncoderTuner | None = None  # index.tune: auto, on the embedded index


def build_engine(
    config: Config,
    embedder: Embedder | None = None,
    knowledge_dir: Path | None = None,
    index_path: Path | None = None,
) -> Engine:
    """Open the index (not yet synced). Defaults come from config; overrides serve `bot eval --knowledge`."""
    base = embedder.model_path if embedder is not None else encoder_model(config)
    embedder = embedder or Embedder(
        base,
        threads=config.index.threads,
        encoder=EncoderKind(config.index.encoder),
        cache_dir=config.index.encoder_cache,
        workers=config.index.query_workers,
    )
    clarify = config.answering.clarify == "auto"  # calibrate when to ask back only when the bot does
    name = config.index.collection
    if config.index.server_url is not None and index_path is None:
        index = KnowledgeIndex.connect(config.index.server_url, name, embedder, clarify)
        tuner = None
        if config.index.tune == "auto":
            log.warning("index.tune: auto tunes the embedded index only; the shared index keeps its encoder "
                        "(README, 'Tuning the encoder')")  # fmt: skip
    else:
        path = index_path or config.index.path
        tuned = active_encoder(path, name, base) if config.index.tune == "auto" else None
        index = KnowledgeIndex.open(path, name, embedder.with_model(tuned) if tuned else embedder, clarify, bool(tuned))
        tuner = None if config.index.tune == "off" else encoder_tuner(config, index, path, base)
    policy = ResponsePolicy(
        index, config.answering, config.messages.talk_to_human_button, query_workers=config.index.query_workers
    )
    return Engine(config, index, KnowledgeSync(knowledge_dir or config.knowledge.path, index), policy, tuner)


def encoder_tuner(config: Config, index: KnowledgeIndex, index_path: Path, base: Path) -> EncoderTuner:
    """Tunes `base` on the knowledge of the embedded index at `index_path` and switches it over (tune: auto)."""
    name = config.index.embedding_model.name if config.index.embedding_model else config.index.model
    return EncoderTuner(
        index,
        base,
        name,
        encoder_cache(config),
        index.embedder.with_model,
        lambda model: record_active(index_path, config.index.collection, base, model),
        threads=config.index.threads,
    )


def encoder_model(config: Config) -> Path:
    """The encoder's sentence-transformers folder: the configured one, or else the bundled model chosen."""
    return config.index.embedding_model or bundled_encoder(config)


def bundled_encoder(config: Config) -> Path:
    """The folder of the bundled model `index.model` names (unpacked into the encoder cache the first time,
    when it comes in parts). ModelNotInstalled says what to install."""
    return model_folder(BundledModel(config.index.model), encoder_cache(config))


def encoder_cache(config: Config) -> Path:
    """Where exported encoders, models unpacked from parts and tuned encoders are kept."""
    return config.index.encoder_cache or default_cache_dir()


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
    actions: ActionClient | None = None  # set when business actions are configured


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
    environ = os.environ if environ is None else environ
    coordination = await open_coordination(config.coordination, environ)
    try:
        engine = build_engine(config, embedder)
    except IndexUnavailable as err:
        await coordination.close()
        raise RuntimeError(f"index.server_url: {err}") from err
    await anyio.to_thread.run_sync(engine.index.embedder.load)
    if engine.index.shared:  # the process elected to sync does it; until then, what the server holds serves
        await anyio.to_thread.run_sync(lambda: engine.sync.load_shared(forms=True))
        report = SyncReport(unchanged=len(engine.index.answerable()))
        if coordination.kind == LocalCoordination.kind:
            log.warning("index.server_url without coordination.redis_url: this process syncs the shared index "
                        "itself; run only one such process")  # fmt: skip
    else:
        report = await anyio.to_thread.run_sync(engine.sync.run)
    store = await ConversationStore.from_settings(config.store, environ)
    model = None
    if responder is None and config.llm is not None:
        model = model_responder(config, engine, environ)
    responder = responder or model or KnowledgeResponder(config.messages, config.answering)
    actions = ActionClient(config.actions, environ) if config.actions is not None else None
    forms = FormRunner(actions, store.ledger, lambda: engine.sync.forms, config.messages) if actions else None
    pipeline = Pipeline(
        engine.policy, store, responder, config.messages, config.handoff, staffing, notify, on_reply,
        summariser=model, forms=forms, coordination=coordination,
    )  # fmt: skip
    server = None
    if config.actions is not None and config.actions.start:
        server = ActionServerProcess(config.actions, environ, config.store.path.parent / "action-server.log")
    try:
        if server is not None and actions is not None:
            await server.start(actions)
        elif actions is not None and (problem := await actions.health()) is not None:
            log.warning("action server: %s (actions fail with a clear message until it is up)", problem)
        if actions is not None:
            await _check_action_names(actions, engine)
        async with anyio.create_task_group() as tasks:
            stop = anyio.Event()
            if engine.index.shared:
                tasks.start_soon(engine.sync.follow, stop)
                tasks.start_soon(_lead, coordination, stop, _knowledge_work(engine, watch, config))
            elif watch:
                tuned = engine.tuner.request if engine.tuner is not None else lambda: None
                tasks.start_soon(engine.sync.watch, stop, config.knowledge.watch_debounce_ms, tuned)
                log.info("watching %s for edits", engine.sync.directory)
            if engine.tuner is not None:
                engine.tuner.request()  # tunes for the knowledge as synced, unless that is what serves already
            if watch and model is not None:
                tasks.start_soon(model.prompts.watch, stop, config.knowledge.watch_debounce_ms)
            try:
                yield Bot(engine, store, pipeline, report, model, actions)
            finally:
                stop.set()
                await pipeline.aclose()
    finally:
        await coordination.close()
        if actions is not None:
            await actions.aclose()
        if server is not None:
            await server.stop()
        await store.close()
        if engine.tuner is not None:
            await anyio.to_thread.run_sync(engine.tuner.close)
        await anyio.to_thread.run_sync(engine.index.close)


KNOWLEDGE_ROLE = "knowledge-sync"


def _knowledge_work(engine: Engine, watch: bool, config: Config) -> Callable[[anyio.Event], Awaitable[None]]:
    """What the process elected to sync a shared index does: sync the folder, then watch it (if `watch`)."""

    async def work(stop: anyio.Event) -> None:
        # First what changed while no process was syncing (calibrated before anything else), then each edit.
        report = await anyio.to_thread.run_sync(engine.sync.run)
        log.info("this process syncs the shared index at %s: %s", engine.index.where, report.summary())
        if watch:
            log.info("watching %s for edits", engine.sync.directory)
            await engine.sync.watch(stop, config.knowledge.watch_debounce_ms)

    return work


async def _lead(coordination: Coordination, stop: anyio.Event, work: Callable[[anyio.Event], Awaitable[None]]) -> None:
    """Campaign for the knowledge role and do its work when elected, until `stop`."""
    async with anyio.create_task_group() as tasks:

        async def campaign() -> None:
            await coordination.lead(KNOWLEDGE_ROLE, lambda: work(stop))

        tasks.start_soon(campaign)
        await stop.wait()
        tasks.cancel_scope.cancel()


async def _check_action_names(actions: ActionClient, engine: Engine) -> None:
    """The actions the knowledge names, against what the server lists (GET /actions), once at start-up."""
    wanted = {hit.action for hit in engine.index.answerable().values() if hit.action}
    wanted |= {form.action for form in engine.sync.forms.values()}
    wanted |= {form.validate for form in engine.sync.forms.values() if form.validate}
    try:
        listed = await actions.names()
    except ActionError as err:
        log.warning("action server: cannot list its actions (%s); `bot kb check` names what is missing", err)
        return
    for action in sorted(wanted - listed):
        log.warning("action %r is named in the knowledge but the action server does not list it", action)


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


async def open_coordination(settings: CoordinationSettings, env: Mapping[str, str]) -> Coordination:
    """In this process, or in Redis when `redis_url` is set (reachable now, or the bot does not start)."""
    if settings.redis_url is None:
        return LocalCoordination()
    from bot.storage.coordination.redis_coordination import RedisCoordination

    shared = RedisCoordination(settings.redis_url, env.get("SUPPORTBOT_REDIS_PASSWORD"),
                               lease_s=settings.lock_lease_s, wait_s=settings.lock_wait_s,
                               role_lease_s=settings.role_lease_s)  # fmt: skip
    try:
        latency = await shared.ping()
    except CoordinationUnavailable as err:
        await shared.close()
        raise RuntimeError(f"coordination.redis_url: cannot reach Redis ({err})") from err
    log.info("coordination through Redis at %s (%.1f ms)", settings.redis_url, latency)
    return shared
