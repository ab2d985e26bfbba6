"""GET /health: each part this process depends on, whether it answers and how fast, and what it serves."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread

from bot.actions.client import ActionClient
from bot.llm.client import ModelUnavailable
from bot.llm.responder import ModelResponder
from bot.storage.unavailable import Unavailable
from serving.runtime import Bot


async def health_report(
    bot: Bot, channels: dict[str, object], agents: dict[str, object]
) -> tuple[dict[str, object], bool]:
    """The /health body, and whether this process can serve (False: 503, for the load balancer)."""
    coordination = await _dependency_status(bot.pipeline.coordination.kind, bot.pipeline.coordination.ping)
    database = await _dependency_status(bot.store.kind, bot.store.ping)
    index = await _dependency_status(
        "chroma-server" if bot.engine.index.shared else "embedded", _off_loop(bot.engine.index.ping)
    )
    ok = bool(coordination["ok"]) and bool(database["ok"]) and bool(index["ok"])
    body: dict[str, object] = {
        "status": "ok" if ok else "unavailable",
        "knowledge_records": len(bot.engine.index),
        "encoder": bot.engine.index.embedder.identity,  # model / runtime / content hash
        "knowledge": _knowledge_status(bot),
        "channels": channels,
        "agents": agents,
        # The model and action servers serve every process alike: one that is away makes answers
        # plainer (knowledge only, no actions) but does not take this process out of the balancer.
        "model": None if bot.model is None else await _model_status(bot.model),
        "actions": None if bot.actions is None else await _actions_status(bot.actions),
        "coordination": coordination,
        "database": database,
        "index": index,
        "roles": bot.pipeline.coordination.roles(),
    }
    return body, ok


def _off_loop(call: Callable[[], float]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        result: float = await anyio.to_thread.run_sync(call)
        return result

    return run


def _knowledge_status(bot: Bot) -> dict[str, object]:
    status = bot.engine.sync.status
    return {
        "generation": bot.engine.index.generation,
        "syncs": status.syncs,
        "last_sync_at": status.last_at,
        "rejected": list(status.rejected),
        "calibrating": bot.engine.index.calibrating,
        "tuning": None if bot.engine.tuner is None else _tuning_status(bot),
    }


def _tuning_status(bot: Bot) -> dict[str, object]:
    assert bot.engine.tuner is not None
    status = bot.engine.tuner.status
    return {"state": status.state, "batches_done": status.batches[0], "batches": status.batches[1],
            "switches": status.switches, "last": status.last, "last_at": status.last_at}  # fmt: skip


async def _dependency_status(kind: str, ping: Callable[[], Awaitable[float]]) -> dict[str, object]:
    """A shared part for /health: its round trip in milliseconds, or why it cannot be reached."""
    try:
        return {"kind": kind, "ok": True, "latency_ms": round(await ping(), 2)}
    except Unavailable as err:
        return {"kind": kind, "ok": False, "problem": str(err)}


async def _actions_status(actions: ActionClient) -> dict[str, object]:
    started = time.perf_counter()
    problem = await actions.health()
    latency = {"latency_ms": round((time.perf_counter() - started) * 1000.0, 2)} if problem is None else {}
    return {"url": actions.settings.url, "ok": problem is None, "problem": problem} | latency


async def _model_status(responder: ModelResponder) -> dict[str, object]:
    status: dict[str, object] = {
        "name": responder.model.settings.model,
        "circuit": str(responder.breaker.state),
        "prompt_problems": [str(p) for p in responder.prompts.problems],
    }
    try:
        return status | {"ok": True, "latency_ms": round(await responder.model.ping(), 2)}
    except ModelUnavailable as err:
        return status | {"ok": False, "problem": err.reason}
