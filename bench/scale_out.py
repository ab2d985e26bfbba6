#!/usr/bin/env python3
"""Scale-out benchmark: 1 vs 3 `bot serve` processes, embedded vs served parts, side by side in one run.

Setups, each with the repository's knowledge base and the same load:
  embedded-1  one process: SQLite, embedded Chroma, in-process coordination (the default), no balancer
  served-1    one process on PostgreSQL 15, Redis and a Chroma server, behind nginx (deploy/nginx.conf)
  served-3    three processes on the same parts, behind the same nginx config

The real servers (a throwaway PostgreSQL cluster, redis-server, `chroma run`, nginx) are started on loopback
by this script, with the test suite's helpers, and stopped at the end. The load is closed-loop:
--conversations clients at once, each sending --messages messages one after the other over HTTP
(`POST /api/chat`, each with a client_message_id), after a warm-up. Measured per message from just before
it is sent to the reply's last byte. Reported: replies/s over the run, p50/p95 latency, errors.

served-3 also measures how long a knowledge edit takes to be served by all three: from writing the file
to every process reporting the new knowledge generation in /health, and the part of it after the syncing
process had it (the followers' lag, promised within 2 s).

Usage (as root, for PostgreSQL's initdb as the postgres user):
  .venv/bin/python bench/scale_out.py [--conversations 24] [--messages 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import machine, machine_line  # noqa: E402
from tests.botprocess import BotProcess, wait_until  # noqa: E402
from tests.chroma_server import ChromaServer  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.nginx_server import NginxServer  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TEXTS = ("How much does shipping cost?", "How do I return an item?", "Can I change my delivery address?",
         "How can I track my order?", "Do you ship to Norway?", "How long does a refund take?")  # fmt: skip
EDIT = """\
- id: scale-out-bench-edit
  question: Is there a benchmark question {n}?
  answer: Yes, edit {n}.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--edits", type=int, default=3, help="knowledge edits timed in served-3")
    parser.add_argument("--work", type=Path, default=None)
    return parser.parse_args()


class Parts:
    """PostgreSQL, Redis and a Chroma server, started once for the served setups."""

    def __init__(self, stack: ExitStack, work: Path) -> None:
        self.postgres = PostgresServer(free_port())
        self.postgres.start()
        stack.callback(self.postgres.stop)
        (work / "redis").mkdir()
        self.redis = RedisServer(free_port(), work / "redis")
        self.redis.start()
        stack.callback(self.redis.stop)
        (work / "chroma-server").mkdir()
        self.chroma = ChromaServer(free_port(), work / "chroma-server")
        self.chroma.start()
        stack.callback(self.chroma.stop)


def base_config(work: Path, name: str, parts: Parts | None) -> dict[str, Any]:
    knowledge = work / name / "knowledge"
    shutil.copytree(REPO / "knowledge", knowledge)
    config: dict[str, Any] = {
        "knowledge": {"path": str(knowledge), "watch": True, "watch_debounce_ms": 50},
        "index": {"path": str(work / name / "chroma")},
        "store": {"path": str(work / name / "conversations.sqlite3")},
        "web": {"messages_per_minute_per_conversation": 100_000, "messages_per_minute_per_ip": 1_000_000},
    }
    if parts is not None:
        database = parts.postgres.create_database(name.replace("-", "_"))
        config["store"] = {"url": database, "pool_size": 8}
        config["coordination"] = {"redis_url": parts.redis.url.replace("/0", f"/{1 + len(name) % 14}")}
        config["index"] = {"server_url": parts.chroma.url, "collection": f"bench-{name}"}
    return config


@contextmanager
def setup(work: Path, name: str, processes: int, parts: Parts | None) -> Iterator[tuple[str, list[BotProcess]]]:
    """The bots of one setup, and the URL the load goes to (nginx, or the one process)."""
    config = base_config(work, name, parts)
    environ = {} if parts is None else {"SUPPORTBOT_DATABASE_PASSWORD": parts.postgres.password}
    bots = []
    for n in range(processes):
        port = free_port()
        path = work / name / f"config-{n}.yml"
        path.write_text(yaml.safe_dump(config | {"server": {"port": port}}), encoding="utf-8")
        bots.append(BotProcess(path, port, work / name / f"bot-{n}.log", environ))
    with ExitStack() as stack:
        starting = [threading.Thread(target=bot.start) for bot in bots]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        for bot in bots:
            stack.callback(bot.stop)
        if parts is None:
            yield bots[0].url, bots
            return
        folder = work / name / "nginx"
        folder.mkdir()
        nginx = NginxServer(free_port(), [bot.url.removeprefix("http://") for bot in bots], folder)
        nginx.start()
        stack.callback(nginx.stop)

        def generations() -> set[object]:
            return {(bot.health() or {}).get("knowledge", {}).get("generation") for bot in bots}

        wait_until(lambda: len(generations()) == 1 and None not in generations(), "one generation everywhere", 300)
        yield nginx.url, bots


async def load(url: str, conversations: int, messages: int, tag: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def converse(client: httpx.AsyncClient, n: int) -> None:
        nonlocal errors
        conversation: str | None = None
        for k in range(messages):
            body: dict[str, str] = {"text": TEXTS[(n + k) % len(TEXTS)], "client_message_id": f"{tag}-{n}-{k}"}
            if conversation:
                body["conversation_id"] = conversation
            started = time.perf_counter()
            response = await client.post(f"{url}/api/chat", json=body)
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            conversation = response.json()["conversation_id"]

    limits = httpx.Limits(max_connections=conversations + 4)
    async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as client:
        await asyncio.gather(*(converse(client, n) for n in range(min(4, conversations))))  # warm-up
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(converse(client, n) for n in range(conversations)))
        seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "replies": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "replies_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
    }


def edit_lag(bots: list[BotProcess], knowledge: Path, n: int) -> tuple[float, float]:
    """Seconds from writing an edit to all processes serving it, and after the first one served it."""

    def generation(bot: BotProcess) -> object:
        return (bot.health() or {}).get("knowledge", {}).get("generation")

    before = {generation(bot) for bot in bots}
    written = time.perf_counter()
    (knowledge / "faq" / "bench-edit.yml").write_text(EDIT.format(n=n), encoding="utf-8")
    seen: dict[int, float] = {}
    while len(seen) < len(bots):
        for i, bot in enumerate(bots):
            if i not in seen and generation(bot) not in before:
                seen[i] = time.perf_counter()
        time.sleep(0.02)
        if time.perf_counter() - written > 120:
            raise RuntimeError("an edit was not served by every process within 120 s")
    return max(seen.values()) - written, max(seen.values()) - min(seen.values())


def main() -> int:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-out-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {machine_line(info)}\nwork: {work}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    lags: list[tuple[float, float]] = []
    with ExitStack() as stack:
        parts = Parts(stack, work)
        for name, processes, served in (("embedded-1", 1, False), ("served-1", 1, True), ("served-3", 3, True)):
            print(f"{name}: starting {processes} process(es)...", flush=True)
            with setup(work, name, processes, parts if served else None) as (url, bots):
                results[name] = asyncio.run(load(url, args.conversations, args.messages, name))
                print(f"{name}: {json.dumps(results[name])}", flush=True)
                if processes > 1:
                    lags = [edit_lag(bots, work / name / "knowledge", n) for n in range(args.edits)]
    base = results["embedded-1"]["replies_per_s"]
    print("\n| setup | processes | replies/s | × embedded-1 | p50 ms | p95 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        print(f"| {name} | {name[-1]} | {row['replies_per_s']} | {row['replies_per_s'] / base:.2f} | "
              f"{row['p50_ms']} | {row['p95_ms']} | {row['errors']} |")  # fmt: skip
    if lags:
        total = ", ".join(f"{lag:.2f}" for lag, _ in lags)
        follow = ", ".join(f"{spread:.2f}" for _, spread in lags)
        print(f"\nedit served by all 3 (s from writing the file): {total}; followers after the first: {follow}")
    print(f"\nload: {args.conversations} conversations x {args.messages} messages, closed loop; "
          f"machine: {machine_line(info)}")  # fmt: skip
    return 0 if all(row["errors"] == 0 for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
