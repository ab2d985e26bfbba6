#!/usr/bin/env python3
"""Load benchmark: many concurrent conversations against the real server, over WebSocket and/or HTTP.

The script
  1. writes its own config.yml into a work directory (default: a new temporary directory), with rate
     limits raised so one client address can drive the load, and indexes the knowledge base with
     `bot kb index` so that indexing is not part of the measurement;
  2. starts `bot serve --no-watch` as a subprocess on a free port of 127.0.0.1 (never any other
     address), waits for GET /health, and always stops it at the end;
  3. sends a few warm-up messages, then for each transport drives N concurrent conversations of M
     messages each. Pacing is open-loop per conversation: message k is scheduled at a uniformly random
     point in the k-th slot of length 1/--rate after the phase starts, and is sent at
     max(its scheduled time, the moment the previous reply arrived); the schedule never restarts
     from a late reply. Texts come from evals/demo-cases.csv (column `text`), cycled with a
     per-conversation offset;
  4. measures each message from just before it is sent to the moment its reply is read (WebSocket: the
     `reply` frame; HTTP: the response body), and reports replies, errors, replies/s over the sending
     period (first send to last reply) and latency p50/p90/p99/max per transport;
  5. stops the server and verifies the SQLite store: every message sent was stored exactly once as a
     user turn, every user turn has exactly one bot turn replying to it, the turn ids the client saw
     are the stored ones, and (WebSocket) every client_message_id got exactly one `reply` frame.
     Prints PASS/FAIL per check and exits 1 on any FAIL.

Bounded: N*M messages per transport, and each transport stops sending --duration-cap seconds after it
started (messages still in flight then get at most 10 more seconds).

Usage:
  python bench/load.py [--conversations 50] [--messages 20] [--transport ws|http|both] [--rate 2.0]
                       [--duration-cap 120] [--work DIR] [--timeout 30] [--warmup 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from botproc import bot_env, index_knowledge  # bench/botproc.py (scripts run from bench/)
from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "evals" / "demo-cases.csv"
HOST = "127.0.0.1"  # the only address this benchmark ever binds or connects to
TRANSPORTS = ("ws", "http")
READY_TIMEOUT_S = 180.0
DRAIN_GRACE_S = 10.0  # after the cap, how long in-flight messages may still take
STOP_TIMEOUT_S = 20.0
PERCENTILES = (50, 90, 99)


# ---------------------------------------------------------------- arguments and machine


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50, help="concurrent conversations (default 50)")
    parser.add_argument("--messages", type=int, default=20, help="messages per conversation (default 20)")
    parser.add_argument("--transport", choices=(*TRANSPORTS, "both"), default="both", help="default: both")
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s per conversation (default 2.0)")
    parser.add_argument(
        "--duration-cap", type=float, default=120.0, help="seconds each transport may send for (default 120)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one reply (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up messages before measuring (default 5)")
    parser.add_argument(
        "--encoder-threads", type=int, default=1, help="threads per encoder call in the server (default 1)"
    )
    parser.add_argument(
        "--encoder",
        choices=("onnx-int8", "onnx", "torch"),
        default="onnx-int8",
        help="the server's index.encoder (default onnx-int8, the product's default)",
    )
    parser.add_argument(
        "--query-workers", type=int, default=2, help="the server's index.query_workers (default 2, the product's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the pacing jitter (default 0)")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a new temporary one)")
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot", help="bot executable")
    args = parser.parse_args(argv)
    for name in ("conversations", "messages"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("rate", "duration_cap", "timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    args.transports = list(TRANSPORTS) if args.transport == "both" else [args.transport]
    return args


def load_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            sys.exit(f"{path}: no `text` column (found {reader.fieldnames})")
        texts = [row["text"].strip() for row in reader if row["text"].strip()]
    if not texts:
        sys.exit(f"{path}: no texts")
    return texts


# ---------------------------------------------------------------- server


def write_config(work: Path, encoder_threads: int, encoder: str, query_workers: int) -> Path:
    config = work / "config.yml"
    config.write_text(
        "# Written by bench/load.py. Rate limits raised: the whole load comes from one client address.\n"
        f"knowledge: {{path: {json.dumps(str(REPO / 'knowledge'))}, watch: false}}\n"
        f"index: {{path: {json.dumps(str(work / 'chroma'))}, threads: {encoder_threads}, encoder: {encoder}, "
        f"query_workers: {query_workers}}}\n"
        f"store: {{path: {json.dumps(str(work / 'conversations.sqlite3'))}}}\n"
        "web: {messages_per_minute_per_conversation: 100000, messages_per_minute_per_ip: 1000000}\n",
        encoding="utf-8",
    )
    return config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(bot: Path, config: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [str(bot), "serve", "--config", str(config), "--host", HOST, "--port", str(port), "--no-watch"]
    with log_path.open("wb") as log:  # a file, not a pipe: the server logs every exchange and must never block
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=bot_env())


def wait_ready(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> float:
    started = time.perf_counter()
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode} before it was ready:\n{tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{base_url}/health").status_code == 200:
                    if "Support bot ready" not in log_path.read_text(encoding="utf-8", errors="replace"):
                        print("note: /health answered 200 before 'Support bot ready' was printed", flush=True)
                    return time.perf_counter() - started
            time.sleep(0.2)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f}s:\n{tail(log_path)}")


def stop_server(server: subprocess.Popen[bytes]) -> int | None:
    if server.poll() is not None:
        return server.returncode
    server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the store is closed cleanly
    try:
        return server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(STOP_TIMEOUT_S)
        return None  # had to be killed


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- load


@dataclass
class Sample:
    """One message: when it was meant to go, when it went, and what came back."""

    transport: str
    conversation: int
    seq: int
    client_message_id: str
    text: str
    scheduled: float = 0.0  # seconds after the phase started
    sent: float | None = None
    replied: float | None = None
    status: str = "not_sent"  # ok | error | timeout | not_sent
    detail: str = ""
    conversation_id: str | None = None
    ack_turn_id: int | None = None  # WS: the stored user turn, as acknowledged
    reply_turn_id: int | None = None  # the bot turn, as the reply named it
    answered_by: str | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.status != "ok" or self.sent is None or self.replied is None:
            return None
        return (self.replied - self.sent) * 1000


@dataclass
class Phase:
    transport: str
    samples: list[Sample]
    started: float = 0.0  # perf_counter at phase start
    wall_s: float = 0.0
    # WS only: every `reply` / `ack` frame by client_message_id, and frames that matched nothing we sent
    reply_frames: Counter[str] = field(default_factory=Counter)
    ack_frames: Counter[str] = field(default_factory=Counter)
    stray_frames: list[str] = field(default_factory=list)
    connection_errors: list[str] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None


class Deadlines:
    def __init__(self, start: float, cap: float, timeout: float) -> None:
        self.send_until = start + cap
        self.hard = start + cap + DRAIN_GRACE_S
        self.timeout = timeout

    def reply_timeout(self) -> float:
        return max(0.0, min(self.timeout, self.hard - time.perf_counter()))


def plan(transport: str, run_tag: str, texts: list[str], args: argparse.Namespace) -> list[list[Sample]]:
    """Per conversation, its messages with their scheduled send times (one per 1/rate slot, jittered)."""
    rng = random.Random(f"{args.seed}:{transport}")
    interval = 1.0 / args.rate
    step = max(1, len(texts) // args.conversations)
    conversations = []
    for c in range(args.conversations):
        offset = (c * step) % len(texts)
        samples = []
        for k in range(args.messages):
            samples.append(
                Sample(
                    transport=transport,
                    conversation=c,
                    seq=k,
                    client_message_id=f"{run_tag}-{transport}-c{c}-m{k}",
                    text=texts[(offset + k) % len(texts)],
                    scheduled=(k + rng.random()) * interval,
                )
            )
        conversations.append(samples)
    return conversations


async def paced(
    samples: list[Sample], phase: Phase, deadlines: Deadlines, send: Callable[[Sample], Awaitable[None]]
) -> None:
    """Open loop: each message waits for its scheduled time, but also for the previous reply."""
    for sample in samples:
        due = phase.started + sample.scheduled
        if due >= deadlines.send_until:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() >= deadlines.send_until:
            return
        await send(sample)


async def ws_conversation(url: str, samples: list[Sample], phase: Phase, deadlines: Deadlines) -> None:
    by_id = {s.client_message_id: s for s in samples}
    waiting: dict[str, asyncio.Future[None]] = {}

    async def receive(ws: ClientConnection) -> None:
        try:
            await read_frames(ws)
        finally:  # connection gone: nobody waits for a reply that cannot come
            for future in waiting.values():
                if not future.done():
                    future.set_result(None)

    async def read_frames(ws: ClientConnection) -> None:
        async for raw in ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            kind = frame.get("type")
            cmid = frame.get("client_message_id")
            sample = by_id.get(cmid) if isinstance(cmid, str) else None
            if kind in ("typing", "delta"):
                continue
            if kind == "ack" and sample is not None:
                phase.ack_frames[sample.client_message_id] += 1
                sample.ack_turn_id = frame.get("turn_id")
            elif kind == "reply" and sample is not None:
                phase.reply_frames[sample.client_message_id] += 1
                if phase.reply_frames[sample.client_message_id] == 1 and sample.status == "sent":
                    sample.replied = now
                    sample.status = "ok"
                    sample.reply_turn_id = frame.get("turn_id")
                    sample.answered_by = frame.get("answered_by")
                future = waiting.pop(sample.client_message_id, None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind == "error" and sample is not None:
                if sample.status == "sent":
                    sample.status = "error"
                    sample.replied = now
                    sample.detail = f"error frame {frame.get('code')}: {frame.get('message')}"
                future = waiting.pop(sample.client_message_id, None)
                if future is not None and not future.done():
                    future.set_result(None)
            else:
                phase.stray_frames.append(str(raw)[:300])

    conversation_id: str | None = None
    try:
        async with connect(
            f"{url}/api/ws", proxy=None, open_timeout=deadlines.timeout, ping_interval=None, max_size=2**22
        ) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), deadlines.timeout))
            if ready.get("type") != "ready" or not ready.get("conversation_id"):
                raise RuntimeError(f"expected a ready frame, got {ready!r}")
            conversation_id = str(ready["conversation_id"])
            receiver = asyncio.create_task(receive(ws))

            async def send(sample: Sample) -> None:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                waiting[sample.client_message_id] = future
                frame = {"type": "message", "text": sample.text, "client_message_id": sample.client_message_id}
                sample.conversation_id = conversation_id
                sample.status = "sent"
                sample.sent = time.perf_counter()
                await ws.send(json.dumps(frame))
                try:
                    await asyncio.wait_for(asyncio.shield(future), deadlines.reply_timeout())
                except TimeoutError:
                    waiting.pop(sample.client_message_id, None)
                    if sample.status == "sent":
                        sample.status = "timeout"
                        sample.detail = "no reply frame in time"
                if receiver.done():
                    raise RuntimeError(f"connection lost: {receiver.exception()!r}")

            try:
                await paced(samples, phase, deadlines, send)
                await asyncio.sleep(0.2)  # a duplicate reply frame would arrive about now
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await receiver
    except (OSError, TimeoutError, ConnectionClosed, RuntimeError, ValueError) as err:
        phase.connection_errors.append(f"conversation {samples[0].conversation}: {err!r}")
        for sample in samples:
            if sample.status == "sent":
                sample.status = "error"
                sample.detail = f"connection: {err!r}"
            elif sample.status == "not_sent" and conversation_id is None:
                sample.detail = "connection never opened"


async def http_conversation(
    client: httpx.AsyncClient, url: str, samples: list[Sample], phase: Phase, deadlines: Deadlines
) -> None:
    conversation_id: str | None = None

    async def send(sample: Sample) -> None:
        nonlocal conversation_id
        body: dict[str, str] = {"text": sample.text, "client_message_id": sample.client_message_id}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        sample.conversation_id = conversation_id
        sample.status = "sent"
        sample.sent = time.perf_counter()
        try:
            response = await asyncio.wait_for(client.post(f"{url}/api/chat", json=body), deadlines.reply_timeout())
            payload = response.json()
            sample.replied = time.perf_counter()
        except TimeoutError:
            sample.status = "timeout"
            sample.detail = "no response in time"
            return
        except (httpx.HTTPError, ValueError) as err:
            sample.replied = time.perf_counter()  # when it failed (no latency is counted for it)
            sample.status = "error"
            sample.detail = f"{type(err).__name__}: {err} (cause: {root_cause(err)!r})"
            return
        if response.status_code != 200:
            sample.status = "error"
            sample.detail = f"HTTP {response.status_code}: {str(payload)[:200]}"
            return
        sample.status = "ok"
        sample.reply_turn_id = payload.get("turn_id")
        sample.answered_by = payload.get("answered_by")
        if conversation_id is None:
            conversation_id = payload.get("conversation_id")
        sample.conversation_id = conversation_id

    await paced(samples, phase, deadlines, send)


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception behind a transport error (e.g. the OSError under an httpx.ReadError)."""
    seen = {id(err)}
    while True:
        inner = err.__cause__ or err.__context__
        if inner is None or id(inner) in seen:
            return err
        seen.add(id(inner))
        err = inner


async def watch_loop_lag(lags: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes up: the load generator's own event-loop delay."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - before - 0.01) * 1000)


async def run_phase(
    transport: str, base_url: str, conversations: list[list[Sample]], args: argparse.Namespace, server_pid: int
) -> Phase:
    phase = Phase(transport, [s for c in conversations for s in c])
    ws_url = base_url.replace("http://", "ws://", 1)
    limits = httpx.Limits(max_connections=args.conversations + 5, max_keepalive_connections=args.conversations + 5)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=args.timeout) as client:
        stop = asyncio.Event()
        lag_task = asyncio.create_task(watch_loop_lag(phase.loop_lag_ms, stop))
        cpu_client, cpu_server = time.process_time(), cpu_seconds(server_pid)
        phase.started = time.perf_counter()
        deadlines = Deadlines(phase.started, args.duration_cap, args.timeout)
        if transport == "ws":
            tasks = [ws_conversation(ws_url, c, phase, deadlines) for c in conversations]
        else:
            tasks = [http_conversation(client, base_url, c, phase, deadlines) for c in conversations]
        await asyncio.gather(*tasks)
        phase.wall_s = time.perf_counter() - phase.started
        phase.client_cpu_s = time.process_time() - cpu_client
        server_after = cpu_seconds(server_pid)
        phase.server_cpu_s = None if cpu_server is None or server_after is None else server_after - cpu_server
        stop.set()
        await lag_task
    return phase


async def warm_up(base_url: str, run_tag: str, texts: list[str], count: int, timeout: float) -> list[Sample]:
    samples = [Sample("warmup", 0, k, f"{run_tag}-warmup-c0-m{k}", texts[(k * 17) % len(texts)]) for k in range(count)]
    phase = Phase("warmup", samples, started=time.perf_counter())
    deadlines = Deadlines(phase.started, 1e9, timeout)
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
        await http_conversation(client, base_url, samples, phase, deadlines)  # one conversation, back to back
    return samples


# ---------------------------------------------------------------- figures


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(phase: Phase, args: argparse.Namespace, server_ms: list[float]) -> dict[str, Any]:
    samples = phase.samples
    sent = [s for s in samples if s.status != "not_sent"]
    ok = [s for s in sent if s.status == "ok"]
    latencies = sorted(s.latency_ms for s in ok if s.latency_ms is not None)
    first_send = min((s.sent for s in sent if s.sent is not None), default=None)
    last_reply = max((s.replied for s in ok if s.replied is not None), default=None)
    period = (last_reply - first_send) if first_send is not None and last_reply is not None else None
    lag = sorted(
        (s.sent - (phase.started + s.scheduled)) * 1000 for s in sent if s.sent is not None
    )  # how far behind schedule messages went out: > 0 when replies came slower than the schedule
    loop_lag = sorted(phase.loop_lag_ms)
    server_sorted = sorted(server_ms)
    statuses = Counter(s.status for s in samples)
    result: dict[str, Any] = {
        "transport": phase.transport,
        "planned": len(samples),
        "sent": len(sent),
        "not_sent_cap": statuses.get("not_sent", 0),
        "replies": len(ok),
        "errors": len(sent) - len(ok),
        "errors_by_kind": {k: v for k, v in statuses.items() if k not in ("ok", "not_sent")},
        "offered_msgs_per_s": args.conversations * args.rate,
        "sending_period_s": period,
        "replies_per_s": (len(ok) / period) if period else None,
        "phase_wall_s": phase.wall_s,
        "latency_ms": {f"p{p}": percentile(latencies, p) for p in PERCENTILES} | {"max": max(latencies, default=None)},
        "server_total_ms": {f"p{p}": percentile(server_sorted, p) for p in PERCENTILES}
        | {"max": max(server_sorted, default=None)},
        "send_behind_schedule_ms": {
            "p50": percentile(lag, 50),
            "p99": percentile(lag, 99),
            "max": max(lag, default=None),
        },
        "client_loop_lag_ms": {"p50": percentile(loop_lag, 50), "p99": percentile(loop_lag, 99)},
        "client_cpu_s": phase.client_cpu_s,
        "server_cpu_s": phase.server_cpu_s,
        "answered_by": dict(Counter(s.answered_by for s in ok)),
        "connection_errors": phase.connection_errors[:20],
        "error_examples": [
            f"{s.client_message_id}: {s.status} {s.detail}; sent at {s.sent - phase.started:.3f}s into the run"
            + (f", failed after {(s.replied - s.sent) * 1000:.1f} ms" if s.replied is not None else "")
            for s in sent
            if s.status != "ok" and s.sent is not None
        ][:20],
    }
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(summaries: list[dict[str, Any]]) -> str:
    head = (
        "| transport | sent | replies | errors | replies/s | p50 ms | p90 ms | p99 ms | max ms "
        "| server p50 ms | behind schedule p99 ms | CPU server / client s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for s in summaries:
        lat = s["latency_ms"]
        rows.append(
            f"| {s['transport']} | {s['sent']} | {s['replies']} | {s['errors']} | {fmt(s['replies_per_s'])} "
            f"| {fmt(lat['p50'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} | {fmt(lat['max'])} "
            f"| {fmt(s['server_total_ms']['p50'])} | {fmt(s['send_behind_schedule_ms']['p99'])} "
            f"| {fmt(s['server_cpu_s'])} / {fmt(s['client_cpu_s'])} |"
        )
    return "\n".join([head, *rows])


# ---------------------------------------------------------------- verification


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def read_store(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(turns)")}
        timings = "timings" if "timings" in columns else "NULL AS timings"
        rows = [
            dict(r)
            for r in db.execute(
                f"SELECT id, conversation_id, role, client_message_id, reply_to, {timings} FROM turns ORDER BY id"
            )
        ]
    finally:
        db.close()
    return [r for r in rows if r["role"] == "user"], [r for r in rows if r["role"] == "bot"]


def group_of(cmid: str | None, run_tag: str) -> str:
    """The transport a stored user turn came from, by its client_message_id."""
    if cmid and cmid.startswith(run_tag + "-"):
        return cmid[len(run_tag) + 1 :].split("-", 1)[0]
    return "unknown"


def verify(
    store: Path, run_tag: str, groups: dict[str, list[Sample]], phases: dict[str, Phase]
) -> tuple[list[Check], dict[str, list[float]]]:
    users, bots = read_store(store)
    users_by_cmid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for turn in users:
        users_by_cmid[turn["client_message_id"]].append(turn)
    bots_by_reply: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for turn in bots:
        bots_by_reply[turn["reply_to"]].append(turn)
    user_by_id = {t["id"]: t for t in users}
    checks: list[Check] = []

    def examples(items: list[str]) -> str:
        return "" if not items else "; e.g. " + ", ".join(items[:5])

    # Turns that no message of this run accounts for (the store is fresh, so there should be none).
    known = {s.client_message_id for samples in groups.values() for s in samples}
    extra = [t for t in users if t["client_message_id"] not in known]
    orphan_bots = [t for t in bots if t["reply_to"] is None or t["reply_to"] not in user_by_id]
    checks.append(
        Check(
            "store: no user turns beyond the messages sent, no bot turns without a user turn",
            not extra and not orphan_bots,
            f"{len(extra)} unexpected user turns, {len(orphan_bots)} bot turns without a stored user turn"
            + examples([f"turn {t['id']}" for t in extra + orphan_bots]),
        )
    )

    server_ms: dict[str, list[float]] = defaultdict(list)
    for name, samples in groups.items():
        sent = [s for s in samples if s.status != "not_sent"]
        missing, duplicated, wrong_conversation = [], [], []
        for s in sent:
            stored = users_by_cmid.get(s.client_message_id, [])
            if not stored:
                missing.append(s.client_message_id)
            elif len(stored) > 1:
                duplicated.append(f"{s.client_message_id} x{len(stored)}")
            elif s.conversation_id is not None and stored[0]["conversation_id"] != s.conversation_id:
                wrong_conversation.append(s.client_message_id)
        checks.append(
            Check(
                f"{name}: every message sent stored exactly once as a user turn",
                not missing and not duplicated and not wrong_conversation,
                f"{len(sent)} sent: {len(missing)} missing, {len(duplicated)} stored more than once, "
                f"{len(wrong_conversation)} in another conversation"
                + examples(missing + duplicated + wrong_conversation),
            )
        )

        group_users = [t for t in users if group_of(t["client_message_id"], run_tag) == name]
        unanswered, multiple, cross = [], [], []
        for turn in group_users:
            replies = bots_by_reply.get(turn["id"], [])
            if not replies:
                unanswered.append(f"turn {turn['id']}")
            elif len(replies) > 1:
                multiple.append(f"turn {turn['id']} x{len(replies)}")
            elif replies[0]["conversation_id"] != turn["conversation_id"]:
                cross.append(f"turn {turn['id']}")
            for reply in replies:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    server_ms[name].append(float(json.loads(reply["timings"] or "{}")["total_ms"]))
        checks.append(
            Check(
                f"{name}: every user turn has exactly one bot turn replying to it",
                not unanswered and not multiple and not cross,
                f"{len(group_users)} user turns: {len(unanswered)} without a reply, {len(multiple)} with several, "
                f"{len(cross)} answered in another conversation" + examples(unanswered + multiple + cross),
            )
        )

        mismatched = []
        for s in sent:
            stored = users_by_cmid.get(s.client_message_id, [])
            if s.status != "ok" or len(stored) != 1:
                continue
            replies = bots_by_reply.get(stored[0]["id"], [])
            if len(replies) != 1 or replies[0]["id"] != s.reply_turn_id:
                mismatched.append(f"{s.client_message_id} (reply turn_id {s.reply_turn_id})")
            elif name == "ws" and s.ack_turn_id != stored[0]["id"]:
                mismatched.append(f"{s.client_message_id} (ack turn_id {s.ack_turn_id} != {stored[0]['id']})")
        checks.append(
            Check(
                f"{name}: turn ids in the replies{' and acks' if name == 'ws' else ''} match the store",
                not mismatched,
                f"{len(mismatched)} mismatched" + examples(mismatched),
            )
        )

        phase = phases.get(name)
        if name == "ws" and phase is not None:
            not_one = [
                f"{s.client_message_id} x{phase.reply_frames.get(s.client_message_id, 0)}"
                for s in sent
                if phase.reply_frames.get(s.client_message_id, 0) != 1
            ]
            checks.append(
                Check(
                    "ws: every client_message_id received exactly one reply frame",
                    not not_one and not phase.stray_frames,
                    f"{len(sent)} sent: {len(not_one)} without exactly one reply frame, "
                    f"{len(phase.stray_frames)} unmatched frames" + examples(not_one + phase.stray_frames),
                )
            )
        if name in TRANSPORTS:
            failed = [f"{s.client_message_id}: {s.status} {s.detail}" for s in sent if s.status != "ok"]
            checks.append(
                Check(
                    f"{name}: every message sent got a successful reply",
                    not failed,
                    f"{len(sent) - len(failed)}/{len(sent)} ok" + examples(failed),
                )
            )
    return checks, server_ms


def server_log_problems(log_path: Path) -> list[str]:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [
        line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = machine()
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="supportbot-load-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "conversations.sqlite3"
    for suffix in ("", "-wal", "-shm"):  # a fresh store, so every turn in it belongs to this run
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    run_tag = "load" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    params = {
        "conversations": args.conversations,
        "messages": args.messages,
        "transports": args.transports,
        "rate_per_conversation": args.rate,
        "offered_msgs_per_s": args.conversations * args.rate,
        "duration_cap_s": args.duration_cap,
        "reply_timeout_s": args.timeout,
        "warmup_messages": args.warmup,
        "seed": args.seed,
        "encoder_threads": args.encoder_threads,
        "encoder": args.encoder,
        "query_workers": args.query_workers,
        "work": str(work),
        "cases": str(CASES),
    }
    print(f"machine: {machine_line(m)}; load average {m['load_average_at_start']}")
    print(
        "parameters: "
        f"--conversations {args.conversations} --messages {args.messages} --transport {args.transport} "
        f"--rate {args.rate:g} --duration-cap {args.duration_cap:g} --timeout {args.timeout:g} "
        f"--warmup {args.warmup} --seed {args.seed} --encoder-threads {args.encoder_threads} "
        f"--encoder {args.encoder} --query-workers {args.query_workers}  "
        f"(offered load {args.conversations * args.rate:g} msgs/s per transport, "
        f"{args.conversations * args.messages} messages per transport)"
    )
    print(f"work directory: {work}", flush=True)

    texts = load_texts(CASES)
    config = write_config(work, args.encoder_threads, args.encoder, args.query_workers)
    print(f"index: {index_knowledge(args.bot, config)}", flush=True)

    port = free_port()
    base_url = f"http://{HOST}:{port}"
    log_path = work / "server.log"
    server = start_server(args.bot, config, port, log_path)
    phases: dict[str, Phase] = {}
    warmup: list[Sample] = []
    server_exit: int | None = None
    server_died = False
    try:
        ready_s = wait_ready(server, base_url, log_path)
        print(f"server: pid {server.pid} on {base_url}, ready after {ready_s:.1f}s (log: {log_path})", flush=True)
        if args.warmup:
            warmup = asyncio.run(warm_up(base_url, run_tag, texts, args.warmup, args.timeout))
            ok = sum(s.status == "ok" for s in warmup)
            print(f"warm-up: {ok}/{len(warmup)} ok over HTTP (not measured)", flush=True)
        for transport in args.transports:
            conversations = plan(transport, run_tag, texts, args)
            print(f"{transport}: driving {args.conversations} conversations x {args.messages} messages...", flush=True)
            phases[transport] = asyncio.run(run_phase(transport, base_url, conversations, args, server.pid))
            if server.poll() is not None:
                server_died = True
                print(f"server exited during the {transport} run with {server.returncode}", flush=True)
                break
    finally:
        server_died = server_died or server.poll() is not None
        server_exit = stop_server(server)

    groups: dict[str, list[Sample]] = {"warmup": warmup} if warmup else {}
    groups.update({name: phase.samples for name, phase in phases.items()})
    checks, server_ms = verify(store, run_tag, groups, phases)
    problems = server_log_problems(log_path)
    checks.append(
        Check(
            "server: stayed up for the whole run and logged no ERROR or traceback",
            not server_died and not problems,
            f"exit after SIGINT: {server_exit if server_exit is not None else 'killed'}; {len(problems)} error lines"
            + ("; e.g. " + " | ".join(problems[:3]) if problems else ""),
        )
    )
    summaries = [summarize(phase, args, server_ms.get(name, [])) for name, phase in phases.items()]

    print()
    print(results_table(summaries))
    for s in summaries:
        if s["not_sent_cap"]:
            print(f"WARNING: {s['transport']}: {s['not_sent_cap']} messages not sent before the duration cap")
        print(
            f"{s['transport']}: offered {s['offered_msgs_per_s']:g} msgs/s; "
            f"sending period {fmt(s['sending_period_s'], 2)}s; "
            f"sent behind schedule p50 {fmt(s['send_behind_schedule_ms']['p50'])} ms, "
            f"max {fmt(s['send_behind_schedule_ms']['max'])} ms; client loop lag p99 "
            f"{fmt(s['client_loop_lag_ms']['p99'])} ms; answered_by {s['answered_by']}"
        )
        for line in s["connection_errors"][:5] + s["error_examples"][:5]:
            print(f"  {line}")
    print()
    for check in checks:
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")

    results = {
        "run": run_tag,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": m,
        "machine_line": machine_line(m),
        "parameters": params,
        "summaries": summaries,
        "checks": [asdict(c) for c in checks],
        "passed": all(c.ok for c in checks),
        "server_log": str(log_path),
        "samples": [
            {k: v for k, v in asdict(s).items() if k != "text"} | {"latency_ms": s.latency_ms}
            for samples in groups.values()
            for s in samples
        ],
    }
    out = work / "load-results.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {out}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
