#!/usr/bin/env python3
"""How long an operator's edit to `knowledge/` takes to be answered, while `bot serve` is running.

The product promise is that an edit is served within 2 seconds. The tests only prove that edits are
applied (they wait up to a minute on a busy machine); this script measures how fast, on a quiet one.

It copies the demo knowledge base into a work directory, indexes it (`bot kb index`, not measured),
starts `bot serve` with live reload on (the configured debounce, 200 ms by default), and then, for each
of --rounds rounds, times four edits, each from the moment the file is written to the first reply that
answers from the new content:

  add      a new FAQ file (one entry, two phrasings)      -> its question is answered with its answer
  edit     that entry's answer changed                    -> the new answer text is served
  remove   the file deleted                               -> the entry is no longer cited
  restore  the largest FAQ file deleted, then written back -> its first entry's question is answered again
           (the time counts from writing it back; every text in it is embedded again)

Before each edit it waits for the previous one's background calibration to finish, so that each is
timed on its own (a burst of edits shares the CPU with those calibrations). While waiting it polls
/health (cheap) every 20 ms, and asks the question only after the knowledge
sync count has moved, then every 50 ms until the reply shows the edit: the poll itself loads the server
as little as possible. It prints the machine, a markdown table (n, p50, p95, max per edit, and the
share within 2 s) and writes live-edit-results.json into the work directory. Exits 1 if an edit was
not served within --timeout seconds.

With --tune, the bot runs with `index.tune: auto`: `bot kb index` tunes the encoder first (not
measured), and each round's new phrasings start another tuning in the background, so the edits are timed
while the tuner trains and switches (the table then counts the edits written while it was busy).

Usage:
  python bench/live_edit.py [--rounds 10] [--timeout 60] [--work DIR] [--tune]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from botproc import bot_env, index_knowledge  # bench/botproc.py (scripts run from bench/)
from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PROMISE_S = 2.0
READY_TIMEOUT_S = 180.0
EDITS = ("add", "edit", "remove", "restore")

NEW_FAQ = """\
- id: bench-dogs-{n}
  question: Can I bring my dog into your store number {n}?
  alternates:
    - are dogs allowed in shop {n}
  answer: {answer}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Bot:
    """`bot serve` with live reload, and the two questions this benchmark asks it."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.client = httpx.Client(base_url=base_url, trust_env=False, timeout=30)
        self.timeout = timeout
        self.tuning_busy = 0  # edits written while the encoder's tuner was training or switching

    def knowledge(self) -> dict[str, Any]:
        return dict(self.client.get("/health").json()["knowledge"])

    def syncs(self) -> int:
        return int(self.knowledge()["syncs"])

    def wait_quiet(self) -> None:
        """Until the previous edit's background calibration is done: each edit is timed on its own."""
        deadline = time.perf_counter() + self.timeout
        while self.knowledge()["calibrating"]:
            if time.perf_counter() > deadline:
                raise TimeoutError("the calibration after the previous edit did not finish")
            time.sleep(0.05)

    def ask(self, text: str) -> dict[str, Any]:
        response = self.client.post("/api/chat", json={"text": text})
        response.raise_for_status()
        return dict(response.json())

    def time_until(self, write: Callable[[], None], served: Callable[[dict[str, Any]], bool], question: str) -> float:
        """Seconds from `write()` to the first reply to `question` that `served` accepts."""
        self.wait_quiet()
        knowledge = self.knowledge()
        before = int(knowledge["syncs"])
        self.tuning_busy += bool(knowledge.get("tuning") and knowledge["tuning"]["state"] != "idle")
        started = time.perf_counter()
        write()
        deadline = started + self.timeout
        while self.syncs() == before:
            if time.perf_counter() > deadline:
                raise TimeoutError("no knowledge sync after the edit")
            time.sleep(0.02)
        while not served(self.ask(question)):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the edit was not served within {self.timeout}s")
            time.sleep(0.05)
        return time.perf_counter() - started


def cited(reply: dict[str, Any]) -> list[str]:
    return [c["id"] for c in reply["citations"]]


def one_round(bot: Bot, knowledge: Path, n: int, largest: Path) -> dict[str, float]:
    new = knowledge / "faq" / f"bench-dogs-{n}.yml"
    question = f"are dogs allowed in shop {n}"
    item = f"bench-dogs-{n}"
    first_answer = f"Dogs on a lead are welcome in store {n}."
    second_answer = f"Only guide dogs are allowed in store {n}."
    times = {
        "add": bot.time_until(
            lambda: new.write_text(NEW_FAQ.format(n=n, answer=first_answer), encoding="utf-8"),
            lambda r: r["reply"].startswith(first_answer),
            question,
        ),
        "edit": bot.time_until(
            lambda: new.write_text(NEW_FAQ.format(n=n, answer=second_answer), encoding="utf-8"),
            lambda r: r["reply"].startswith(second_answer),
            question,
        ),
        "remove": bot.time_until(new.unlink, lambda r: item not in cited(r), question),
    }
    # The largest FAQ file: deleted (not timed), then written back (timed).
    content = largest.read_text(encoding="utf-8")
    entry = yaml.safe_load(content)[0]
    bot.time_until(largest.unlink, lambda r: entry["id"] not in cited(r), entry["question"])
    times["restore"] = bot.time_until(
        lambda: largest.write_text(content, encoding="utf-8"),
        lambda r: cited(r)[:1] == [entry["id"]],
        entry["question"],
    )
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds an edit may take to be served")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot")
    parser.add_argument("--tune", action="store_true", help="index.tune: auto (edits timed while tuning runs)")
    args = parser.parse_args(argv)
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="supportbot-live-edit-"))
    knowledge = work / "knowledge"
    shutil.rmtree(knowledge, ignore_errors=True)
    shutil.copytree(REPO / "knowledge", knowledge)
    largest = max((knowledge / "faq").glob("*.yml"), key=lambda p: len(yaml.safe_load(p.read_text(encoding="utf-8"))))
    config = work / "config.yml"
    config.write_text(
        "# Written by bench/live_edit.py.\n"
        f"knowledge: {{path: {json.dumps(str(knowledge))}, watch: true}}\n"
        f"index: {{path: {json.dumps(str(work / 'chroma'))}, tune: {'auto' if args.tune else 'off'}}}\n"
        f"store: {{path: {json.dumps(str(work / 'conversations.sqlite3'))}}}\n"
        "web: {messages_per_minute_per_conversation: 100000, messages_per_minute_per_ip: 1000000}\n",
        encoding="utf-8",
    )
    m = machine()
    print(f"machine: {machine_line(m)}; load average {m['load_average_at_start']}")
    print(f"indexing: {index_knowledge(args.bot, config)}", flush=True)
    port = free_port()
    log_path = work / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(args.bot), "serve", "--config", str(config), "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=bot_env(),
        )  # fmt: skip
    bot = Bot(f"http://{HOST}:{port}", args.timeout)
    samples: dict[str, list[float]] = {edit: [] for edit in EDITS}
    failure = None
    try:
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while True:
            try:
                bot.syncs()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"bot serve did not start; see {log_path}") from None
                time.sleep(0.2)
        print(f"restore edits write back {largest.name} ({len(yaml.safe_load(largest.read_text()))} entries)")
        for n in range(args.rounds):
            for edit, seconds in one_round(bot, knowledge, n, largest).items():
                samples[edit].append(seconds)
            print(f"round {n + 1}: " + ", ".join(f"{e} {samples[e][-1]:.2f}s" for e in EDITS), flush=True)
    except (TimeoutError, RuntimeError) as err:
        failure = str(err)
        print(f"FAILED: {err}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    print()
    print(f"| edit | n | p50 | p95 | max | within {PROMISE_S:g} s |")
    print("|---|---:|---:|---:|---:|---:|")
    for edit in EDITS:
        values = samples[edit]
        if not values:
            continue
        within = sum(v <= PROMISE_S for v in values)
        print(
            f"| {edit} | {len(values)} | {statistics.median(values):.2f} s | {percentile(values, 95):.2f} s "
            f"| {max(values):.2f} s | {within}/{len(values)} |"
        )
    if args.tune:
        print(f"\nedits written while the tuner was training or switching: {bot.tuning_busy}")
    results = {"machine": m, "rounds": args.rounds, "samples_s": samples, "failure": failure,
               "tune": args.tune, "edits_while_tuning": bot.tuning_busy}  # fmt: skip
    (work / "live-edit-results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nresults: {work / 'live-edit-results.json'}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
