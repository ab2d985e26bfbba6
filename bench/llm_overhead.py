#!/usr/bin/env python3
"""The bot's own overhead on dialogue-model answers: the model server directly vs. the bot end to end.

In one run, for the same questions, it measures time to first token (TTFT), total time and streaming rate
  (a) directly from the OpenAI-compatible model server: a streaming POST /v1/chat/completions with httpx,
      with exactly the request body the bot sends for that question (same messages, model, temperature,
      max_tokens), plus `stream_options: {include_usage: true}` so the final chunk carries token counts;
  (b) through the bot over the widget's WebSocket (/api/ws): TTFT = send -> first `delta` frame,
      total = send -> `reply` frame, pieces/s from the `delta` frames;
and reports the bot's overhead side by side: the difference and ratio of the medians, and the median of
the paired differences. Rates: pieces/s = (pieces - 1) / (first piece -> last piece), the same on both
paths; tokens/s (direct only) = (completion tokens - 1) / (first piece -> end of stream), with the token
count from `usage` in the final chunk (else the number of pieces).

The script
  1. builds the tiny test model (tests/tiny_model.py) into the work directory (reused when already there)
     and serves it with `transformers serve --device cpu` (tests/model_server.py) on a free loopback port;
     or, with --base-url and --model, uses an already running OpenAI-compatible server (vLLM on a GPU
     host, ...) instead. The API key, if the server needs one, comes from SUPPORTBOT_LLM_API_KEY, as for
     the bot;
  2. writes a config.yml into the work directory (demo knowledge, the repository's prompts/, rate limits
     raised, `llm:` with generous time budgets, no retries, a circuit breaker that does not open) and
     indexes the knowledge with `bot kb index`;
  3. capture: starts `bot serve --no-watch` with `llm.base_url` pointing at a small recording proxy in this
     process, asks each question once over the WebSocket, and keeps the request body the bot sent for it
     (the reply must say answered_by "llm"; questions that were not are reported and dropped). The bot is
     then stopped: the proxy is never in the measured path;
  4. measure: starts the bot again with `llm.base_url` pointing straight at the model server, runs
     --warmup rounds (not measured), then N rounds. Round i asks question i mod Q once directly and once
     through the bot, one request at a time, alternating which goes first (direct first on even rounds),
     so slow drifts of a shared machine hit both paths alike. Each request through the bot opens a new
     conversation (new WebSocket, timed from the send, after the `ready` frame), so no history is added
     and the bot sends the model exactly the captured messages;
  5. prints the machine, parameters, a markdown table and the overhead lines, and writes
     llm-overhead-results.json (every sample) into the work directory. Exits 1 if a request failed or a
     reply through the bot was not answered by the model.

The tiny model (2 layers, hidden size 64, trained on the spot until its behaviour checks pass) runs on CPU
and answers in about ten tokens, then EOS, so its absolute TTFT and tokens/s mean nothing for a real model. The point is
the bot's overhead in milliseconds: what retrieval, storing turns, building the prompt, LangChain and the
WebSocket add on top of whatever the model server takes.

Bounded: (warmup + N) rounds of two requests, each request at most --timeout seconds.

Usage:
  python bench/llm_overhead.py [--n 30] [--warmup 3] [--question TEXT ...] [--max-tokens 300]
                               [--base-url URL --model NAME] [--timeout 60] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from botproc import bot_env, index_knowledge  # bench/botproc.py (scripts run from bench/)
from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/tiny_model.py and tests/model_server.py

HOST = "127.0.0.1"  # the only address this benchmark binds; it connects elsewhere only to --base-url
DEFAULT_QUESTIONS = ("How long do I have to return something?", "Do you ship to Norway?", "Can I pay with PayPal?")
API_KEY_ENV = "SUPPORTBOT_LLM_API_KEY"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
PATHS = ("direct", "bot")
LABELS = {"direct": "model server directly (HTTP stream)", "bot": "through the bot (WebSocket)"}


# ---------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="measured requests per path (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up requests per path, not measured (default 3)")
    parser.add_argument(
        "--question",
        action="append",
        dest="questions",
        default=None,
        help="a question the bot answers with the model (repeatable; default: three demo questions)",
    )
    parser.add_argument("--max-tokens", type=int, default=300, help="llm.max_tokens (default 300, as the bot's)")
    parser.add_argument("--base-url", default=None, help="an already running OpenAI-compatible server, e.g. .../v1")
    parser.add_argument("--model", default=None, help="the model name that server serves (with --base-url)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take (default 60)")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a new temporary one)")
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot", help="bot executable")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    if (args.base_url is None) != (args.model is None):
        parser.error("--base-url and --model go together")
    if args.base_url is not None:
        args.base_url = args.base_url.rstrip("/")
    args.questions = args.questions or list(DEFAULT_QUESTIONS)
    return args


# ---------------------------------------------------------------- model server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tiny_model(work: Path) -> tuple[Path, str]:
    """The tiny test model in work/tiny-model, built unless an earlier run left it there."""
    out = work / "tiny-model"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out.resolve(), "reused from an earlier run"
    # Imported by name: tests/ is test code, outside what mypy checks strictly.
    build_tiny_model = importlib.import_module("tests.tiny_model").build_tiny_model
    started = time.perf_counter()
    report = build_tiny_model(out, REPO / "knowledge", REPO / "prompts")
    return out.resolve(), f"built in {time.perf_counter() - started:.0f}s ({report.steps} steps, checks passed)"


def api_headers() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def recording_proxy(upstream: str) -> Any:
    """tests/model_server.py's proxy: forwards to the model server and keeps each request body."""
    proxy_class = importlib.import_module("tests.model_server").RecordingProxy
    return proxy_class(upstream.removesuffix("/v1"), free_port(), api_headers())


# ---------------------------------------------------------------- the bot


def write_config(work: Path, name: str, base_url: str, model: str, max_tokens: int, timeout: float) -> Path:
    config = work / name
    llm = {
        "base_url": base_url,
        "model": model,
        "max_tokens": max_tokens,
        "first_token_timeout_s": 10.0,
        "stall_timeout_s": 10.0,
        "total_timeout_s": timeout,
        "max_retries": 0,
        "breaker_failures": 100,  # one slow answer must not switch the model off for the rest of the run
    }
    config.write_text(
        "# Written by bench/llm_overhead.py. Rate limits raised: every request comes from one client address.\n"
        f"knowledge: {{path: {json.dumps(str(REPO / 'knowledge'))}, watch: false}}\n"
        f"index: {{path: {json.dumps(str(work / 'chroma'))}, threads: 1}}\n"
        f"store: {{path: {json.dumps(str(work / 'conversations.sqlite3'))}}}\n"
        f"prompts: {{path: {json.dumps(str(REPO / 'prompts'))}}}\n"
        "web: {messages_per_minute_per_conversation: 100000, messages_per_minute_per_ip: 1000000}\n"
        f"llm: {json.dumps(llm)}\n",
        encoding="utf-8",
    )
    return config


class BotServer:
    """`bot serve --no-watch` on a free loopback port, always stopped on exit."""

    def __init__(self, bot: Path, config: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.ws_url = f"ws://{HOST}:{self.port}/api/ws"
        self.log_path = log_path
        self._command = [str(bot), "serve", "--config", str(config), "--host", HOST, "--port", str(self.port)]
        self._command.append("--no-watch")
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    def __enter__(self) -> BotServer:
        with self.log_path.open("wb") as log:  # a file, not a pipe: the server logs every exchange
            self.process = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=bot_env()
            )
        started = time.perf_counter()
        try:
            with httpx.Client(trust_env=False, timeout=2.0) as client:
                while time.perf_counter() - started < READY_TIMEOUT_S:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"bot exited with {self.process.returncode}:\n{tail(self.log_path)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{self.url}/health").status_code == 200:
                            self.ready_s = time.perf_counter() - started
                            return self
                    time.sleep(0.2)
            raise RuntimeError(f"bot not ready after {READY_TIMEOUT_S:.0f}s:\n{tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
            return None

    def problems(self) -> list[str]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- one request each way


@dataclass
class Sample:
    path: str  # direct | bot
    round: int  # -1 .. -warmup for warm-up rounds
    question: int
    first: bool  # sent first in its round
    status: str = "ok"  # ok | error
    detail: str = ""
    ttft_ms: float | None = None  # send -> first non-empty piece
    total_ms: float | None = None  # send -> end of stream (direct) / `reply` frame (bot)
    ack_ms: float | None = None  # bot: send -> `ack` frame (the message is stored)
    pieces: int = 0  # non-empty content chunks (direct) / `delta` frames (bot)
    stream_ms: float | None = None  # first piece -> last piece
    completion_tokens: int | None = None  # direct: from `usage`, else the number of pieces
    tokens_from_usage: bool = False
    answered_by: str | None = None  # bot
    client_message_id: str | None = None  # bot
    retrieval_ms: float | None = None  # bot: the server's own retrieval time for this message (from the store)
    server_total_ms: float | None = None  # bot: the server's time from receiving the message to the reply
    text: str = field(default="", repr=False)

    @property
    def pieces_per_s(self) -> float | None:
        """Pieces after the first, over the time from the first piece to the last."""
        if self.pieces < 2 or not self.stream_ms:
            return None
        return (self.pieces - 1) / (self.stream_ms / 1000)

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens after the first over the time from the first piece to the end of the stream (1 / TPOT).

        Up to the end, not the last piece: the count includes tokens that carry no text (EOS).
        """
        if self.completion_tokens is None or self.completion_tokens < 2 or self.ttft_ms is None:
            return None
        if self.total_ms is None or self.total_ms <= self.ttft_ms:
            return None
        return (self.completion_tokens - 1) / ((self.total_ms - self.ttft_ms) / 1000)


async def ask_direct(client: httpx.AsyncClient, upstream: str, body: dict[str, Any], sample: Sample) -> None:
    request = dict(body, stream=True, stream_options={"include_usage": True})
    pieces: list[str] = []
    first = last = None
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST", f"{upstream}/chat/completions", json=request, headers=api_headers()
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(f"error in the stream: {chunk['error']}")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        now = time.perf_counter()
                        first = now if first is None else first
                        last = now
                        pieces.append(text)
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    sample.completion_tokens = int(usage["completion_tokens"])
                    sample.tokens_from_usage = True
        ended = time.perf_counter()
    except (httpx.HTTPError, RuntimeError, ValueError) as err:
        sample.status, sample.detail = "error", f"{type(err).__name__}: {err}"
        return
    if first is None or last is None:
        sample.status, sample.detail = "error", "no content in the stream"
        return
    sample.ttft_ms = (first - started) * 1000
    sample.total_ms = (ended - started) * 1000
    sample.stream_ms = (last - first) * 1000
    sample.pieces = len(pieces)
    if sample.completion_tokens is None:
        sample.completion_tokens = len(pieces)
    sample.text = "".join(pieces)


async def ask_bot(ws_url: str, question: str, cmid: str, sample: Sample, timeout: float) -> None:
    sample.client_message_id = cmid
    pieces: list[str] = []
    first = last = None
    try:
        async with connect(ws_url, proxy=None, open_timeout=timeout, ping_interval=None) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if ready.get("type") != "ready":
                raise RuntimeError(f"expected a ready frame, got {ready!r}")
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "text": question, "client_message_id": cmid}))
            deadline = started + timeout
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.perf_counter())))
                now = time.perf_counter()
                kind = frame.get("type")
                if kind == "ack" and sample.ack_ms is None:
                    sample.ack_ms = (now - started) * 1000
                elif kind == "delta" and frame.get("text"):
                    first = now if first is None else first
                    last = now
                    pieces.append(str(frame["text"]))
                elif kind == "error":
                    raise RuntimeError(f"error frame {frame.get('code')}: {frame.get('message')}")
                elif kind == "reply":
                    sample.total_ms = (now - started) * 1000
                    sample.answered_by = frame.get("answered_by")
                    break
    except (OSError, TimeoutError, ConnectionClosed, RuntimeError, ValueError) as err:
        sample.status, sample.detail = "error", f"{type(err).__name__}: {err}"
        return
    if first is None or last is None:
        sample.status, sample.detail = "error", f"no delta frames (answered_by {sample.answered_by})"
        return
    sample.ttft_ms = (first - started) * 1000
    sample.stream_ms = (last - first) * 1000
    sample.pieces = len(pieces)
    sample.text = "".join(pieces)


# ---------------------------------------------------------------- capture and measure


def customer_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    content = messages[-1].get("content", "") if messages else ""
    return str(content) if isinstance(content, str) else json.dumps(content)


async def capture(
    ws_url: str, proxy: Any, questions: list[str], run_tag: str, timeout: float
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Ask each question once through the bot; keep the body it sent the model for each question."""
    bodies: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    for q, question in enumerate(questions):
        before = len(proxy.requests)
        sample = Sample("bot", -1, q, True)
        await ask_bot(ws_url, question, f"{run_tag}-capture-q{q}", sample, timeout)
        sent = proxy.requests[before:]
        if sample.status != "ok" or sample.answered_by != "llm":
            notes.append(
                f"dropped question {q} {question!r}: answered_by {sample.answered_by}, {sample.status} {sample.detail}"
                f" ({len(sent)} model requests)"
            )
            continue
        matching = [b for b in sent if f"\n{question}\n" in customer_text(b)]
        if len(sent) != 1 or len(matching) != 1:
            notes.append(f"dropped question {q} {question!r}: {len(sent)} model requests, {len(matching)} matching")
            continue
        bodies[q] = matching[0]
    return bodies, notes


def plan_rounds(n: int, warmup: int, questions: list[int]) -> list[tuple[int, int, tuple[str, str]]]:
    """(round, question, order): warm-up rounds are negative; direct goes first on even rounds."""
    rounds = []
    for r in list(range(-warmup, 0)) + list(range(n)):
        order = ("direct", "bot") if r % 2 == 0 else ("bot", "direct")
        rounds.append((r, questions[r % len(questions)], order))
    return rounds


async def measure(
    ws_url: str,
    upstream: str,
    questions: list[str],
    bodies: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    run_tag: str,
) -> list[Sample]:
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with httpx.AsyncClient(trust_env=False, timeout=args.timeout, limits=limits) as client:
        for r, q, order in plan_rounds(args.n, args.warmup, sorted(bodies)):
            for position, path in enumerate(order):
                sample = Sample(path, r, q, position == 0)
                if path == "direct":
                    await ask_direct(client, upstream, bodies[q], sample)
                else:
                    await ask_bot(ws_url, questions[q], f"{run_tag}-r{r}-q{q}", sample, args.timeout)
                samples.append(sample)
            if r == -1 or (r >= 0 and (r + 1) % 10 == 0):
                done = "warm-up" if r < 0 else f"{r + 1}/{args.n} rounds"
                print(f"  {done} done", flush=True)
    return samples


def add_server_timings(store: Path, samples: list[Sample]) -> int:
    """The bot's own timings for each message (stored with its reply), read after the bot has stopped."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT u.client_message_id, b.timings FROM turns u JOIN turns b ON b.reply_to = u.id "
            "WHERE u.role = 'user' AND b.role = 'bot'"
        ).fetchall()
    finally:
        db.close()
    timings = {cmid: json.loads(raw or "{}") for cmid, raw in rows}
    found = 0
    for sample in samples:
        stored = timings.get(sample.client_message_id or "")
        if stored:
            sample.retrieval_ms, sample.server_total_ms = stored.get("retrieval_ms"), stored.get("total_ms")
            found += 1
    return found


# ---------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(samples: list[Sample], path: str) -> dict[str, Any]:
    measured = [s for s in samples if s.path == path and s.round >= 0]
    ok = [s for s in measured if s.status == "ok"]

    def values(name: str) -> list[float]:
        return [float(v) for s in ok if (v := getattr(s, name)) is not None]

    result: dict[str, Any] = {
        "path": path,
        "requests": len(measured),
        "ok": len(ok),
        "errors": len(measured) - len(ok),
        "answered_by": dict(Counter(s.answered_by for s in measured)) if path == "bot" else None,
        "not_llm": sum(s.answered_by != "llm" for s in ok) if path == "bot" else 0,
        "tokens_from_usage": sum(s.tokens_from_usage for s in ok) if path == "direct" else None,
    }
    for name in (
        "ttft_ms",
        "total_ms",
        "ack_ms",
        "retrieval_ms",
        "server_total_ms",
        "stream_ms",
        "pieces",
        "completion_tokens",
    ):
        v = values(name)
        result[name] = {"p50": median(v), "p90": percentile(v, 90), "min": min(v, default=None)}
    for name in ("pieces_per_s", "tokens_per_s"):
        v = values(name)
        result[name] = {"p50": median(v), "p10": percentile(v, 10), "n": len(v)}
    return result


def paired(samples: list[Sample], name: str) -> list[float]:
    """Per measured round with both requests ok: bot minus direct."""
    by_round: dict[int, dict[str, Sample]] = {}
    for s in samples:
        if s.round >= 0 and s.status == "ok":
            by_round.setdefault(s.round, {})[s.path] = s
    out = []
    for pair in by_round.values():
        if len(pair) == 2:
            a, b = getattr(pair["bot"], name), getattr(pair["direct"], name)
            if a is not None and b is not None:
                out.append(float(a) - float(b))
    return out


def overhead(summaries: dict[str, dict[str, Any]], samples: list[Sample]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in ("ttft_ms", "total_ms"):
        bot, direct = summaries["bot"][name]["p50"], summaries["direct"][name]["p50"]
        diffs = paired(samples, name)
        result[name] = {
            "difference_of_medians_ms": None if bot is None or direct is None else bot - direct,
            "ratio_of_medians": None if bot is None or not direct else bot / direct,
            "paired_difference_ms": {"p50": median(diffs), "p10": percentile(diffs, 10), "p90": percentile(diffs, 90)},
            "pairs": len(diffs),
        }
    bot_rate, direct_rate = summaries["bot"]["pieces_per_s"]["p50"], summaries["direct"]["pieces_per_s"]["p50"]
    result["pieces_per_s_ratio_of_medians"] = None if bot_rate is None or not direct_rate else bot_rate / direct_rate
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(summaries: dict[str, dict[str, Any]]) -> str:
    head = (
        "| path | n ok | TTFT p50 / p90 ms | total p50 / p90 ms | pieces p50 | pieces/s p50 "
        "| completion tokens p50 | tokens/s p50 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for path in PATHS:
        s = summaries[path]
        rows.append(
            f"| {LABELS[path]} | {s['ok']}/{s['requests']} | {fmt(s['ttft_ms']['p50'])} / {fmt(s['ttft_ms']['p90'])} "
            f"| {fmt(s['total_ms']['p50'])} / {fmt(s['total_ms']['p90'])} | {fmt(s['pieces']['p50'], 0)} "
            f"| {fmt(s['pieces_per_s']['p50'], 0)} | {fmt(s['completion_tokens']['p50'], 0)} "
            f"| {fmt(s['tokens_per_s']['p50'], 0)} |"
        )
    return "\n".join([head, *rows])


def overhead_lines(result: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, what in (("ttft_ms", "time to first token"), ("total_ms", "total time")):
        o = result[name]
        pd = o["paired_difference_ms"]
        lines.append(
            f"bot overhead, {what}: {fmt(o['difference_of_medians_ms'])} ms (difference of medians), "
            f"ratio of medians {fmt(o['ratio_of_medians'], 2)}x; per round (bot - direct, {o['pairs']} pairs): "
            f"p50 {fmt(pd['p50'])} ms, p10-p90 {fmt(pd['p10'])} to {fmt(pd['p90'])} ms"
        )
    bot = summaries["bot"]
    lines.append(
        f"bot, p50: send -> ack (message stored) {fmt(bot['ack_ms']['p50'])} ms; retrieval "
        f"{fmt(bot['retrieval_ms']['p50'])} ms and message -> reply {fmt(bot['server_total_ms']['p50'])} ms "
        "as the server timed them; streaming rate through the bot / direct (pieces/s, ratio of medians) "
        f"{fmt(result['pieces_per_s_ratio_of_medians'], 2)}x"
    )
    return lines


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = machine()
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="supportbot-llm-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    run_tag = "llm" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    print(f"machine: {machine_line(m)}; load average {m['load_average_at_start']}")
    print(
        f"parameters: --n {args.n} --warmup {args.warmup} --max-tokens {args.max_tokens} --timeout {args.timeout:g}"
        + (f" --base-url {args.base_url} --model {args.model}" if args.base_url else " (tiny model)")
        + f"; questions {args.questions}"
    )
    print(f"work directory: {work}", flush=True)

    model_server = None
    if args.base_url:
        upstream, model_name, model_note = args.base_url, str(args.model), "an already running server"
    else:
        model_dir, built = tiny_model(work)
        print(f"tiny model: {model_dir}, {built}", flush=True)
        model_server = importlib.import_module("tests.model_server").ModelServer(
            model_dir, free_port(), work / "model-server.log"
        )
        started = time.perf_counter()
        model_server.start(timeout=READY_TIMEOUT_S)
        upstream, model_name = f"{model_server.url}/v1", str(model_server.model)
        model_note = (
            f"`transformers serve --device cpu --dtype float32`, ready after {time.perf_counter() - started:.1f}s"
        )
    print(f"model server: {upstream} ({model_note})", flush=True)

    samples: list[Sample] = []
    notes: list[str] = []
    problems: list[str] = []
    try:
        proxy = recording_proxy(upstream)
        capture_config = write_config(
            work, "config-capture.yml", f"{proxy.url}/v1", model_name, args.max_tokens, args.timeout
        )
        config = write_config(work, "config.yml", upstream, model_name, args.max_tokens, args.timeout)
        print(f"index: {index_knowledge(args.bot, config)}", flush=True)

        with proxy, BotServer(args.bot, capture_config, work / "bot-capture.log") as bot:
            print(f"capture: bot ready after {bot.ready_s:.1f}s, model requests through the recording proxy")
            bodies, notes = asyncio.run(capture(bot.ws_url, proxy, args.questions, run_tag, args.timeout))
        for note in notes:
            print(f"  {note}")
        if not bodies:
            print("no question was answered by the model: nothing to measure")
            return 1
        body = next(iter(bodies.values()))
        print(
            f"  captured {len(bodies)} request bodies; keys {sorted(body)}; "
            f"{len(body.get('messages') or [])} messages each",
            flush=True,
        )

        with BotServer(args.bot, config, work / "bot.log") as bot:
            print(f"measure: bot ready after {bot.ready_s:.1f}s, model requests straight to {upstream}", flush=True)
            samples = asyncio.run(measure(bot.ws_url, upstream, args.questions, bodies, args, run_tag))
        problems = bot.problems()  # after the bot stopped: its shutdown is included
        timed = add_server_timings(work / "conversations.sqlite3", [s for s in samples if s.path == "bot"])
        print(f"  server timings found in the store for {timed} of the bot's messages", flush=True)
    finally:
        if model_server is not None:
            model_server.stop()

    summaries = {path: summarize(samples, path) for path in PATHS}
    result = overhead(summaries, samples)
    measured = [s for s in samples if s.round >= 0]
    failures = [f"{s.path} round {s.round}: {s.detail}" for s in measured if s.status != "ok"]
    rounds: dict[int, dict[str, str]] = {}
    for s in measured:
        if s.status == "ok":
            rounds.setdefault(s.round, {})[s.path] = s.text.strip()
    same_text = sum(1 for pair in rounds.values() if len(pair) == 2 and pair["bot"] == pair["direct"])

    print()
    print(results_table(summaries))
    print()
    for line in overhead_lines(result, summaries):
        print(line)
    bot_summary = summaries["bot"]
    print(
        f"through the bot: answered_by {bot_summary['answered_by']} ({bot_summary['not_llm']} not by the model); "
        f"direct: completion tokens from `usage` in {summaries['direct']['tokens_from_usage']}/"
        f"{summaries['direct']['ok']}; same answer text both ways in {same_text}/{len(rounds)} rounds"
    )
    for line in failures[:10] + problems[:5]:
        print(f"  {line}")

    results = {
        "run": run_tag,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": m,
        "machine_line": machine_line(m),
        "parameters": {
            "n": args.n,
            "warmup": args.warmup,
            "max_tokens": args.max_tokens,
            "timeout_s": args.timeout,
            "questions": args.questions,
            "model_server": upstream,
            "model": model_name,
            "external_server": bool(args.base_url),
            "work": str(work),
        },
        "capture_notes": notes,
        "summaries": summaries,
        "overhead": result,
        "same_text_rounds": same_text,
        "failures": failures,
        "bot_log_errors": problems,
        "samples": [asdict(s) | {"pieces_per_s": s.pieces_per_s, "tokens_per_s": s.tokens_per_s} for s in samples],
    }
    out = work / "llm-overhead-results.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {out}")
    return 1 if failures or bot_summary["not_llm"] or notes else 0


if __name__ == "__main__":
    sys.exit(main())
