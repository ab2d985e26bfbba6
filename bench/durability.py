#!/usr/bin/env python3
"""Durability: customers on the web and on Telegram (webhook and polling) while the server is `kill -9`ed.

Two `bot serve` processes run on loopback, each with its own store and index, each with its own loopback
stand-in for the Telegram Bot API (tests/telegram_api.py, the one the tests use):
  A: the web API and Telegram in webhook mode;   B: Telegram in polling mode.
Customers, all at once, each send --messages questions one after another:
  web       POST /api/chat with a client_message_id, retried (same id) until a reply comes back, as the
            widget does;
  webhook   this script plays Telegram: it POSTs each update to /telegram/webhook, retrying until a 200
            (Telegram retries what was not acknowledged), then waits for the bot's sendMessage;
  polling   the update is queued at the Bot API stand-in, which hands it out on getUpdates until an
            offset confirms it; the customer waits for the bot's sendMessage.
--kills times, at a random moment (after a random number of acknowledged messages, seeded), one of the
two servers, chosen at random, gets SIGKILL and is started again at once.

At the end, once every reply the stores hold is confirmed sent (or --settle seconds have passed), it
counts per message:
  acknowledged  the web reply came back / the webhook got its 200 / getUpdates confirmed the update
  stored        its user turn is in the store (by its client_message_id)
  once          answered exactly once: one bot turn for it in the store, and (Telegram) one sendMessage
  twice         answered more than once (Telegram: more sendMessage calls to the chat than questions)
  lost          acknowledged but not stored, or stored but never answered
and prints the machine, the seed, a table per channel and the totals. Exits 1 if anything was lost or
answered twice.

--think S makes each customer wait S seconds after an answer before the next question (0: at once, the
heaviest load).

Usage:
  python bench/durability.py [--customers 50] [--messages 10] [--kills 3] [--think 0] [--seed 0] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from botproc import bot_env, index_knowledge  # bench/botproc.py (scripts run from bench/)
from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/telegram_api.py: the Bot API stand-in
HOST = "127.0.0.1"
SECRET = "durability-webhook-secret"
# Customers ask FAQ titles, each answered by its own entry: a chat that got the same reply twice got one
# answer twice (a customer asks each at most once: --messages is at most this many).
QUESTIONS = tuple(
    entry["question"]
    for path in sorted((REPO / "knowledge" / "faq").glob("*.yml"))
    for entry in yaml.safe_load(path.read_text(encoding="utf-8"))[:3]
)
CHANNELS = ("web", "webhook", "polling")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `bot serve` process that this script kills and restarts."""

    name: str
    config: Path
    port: int
    bot: Path
    log: Path
    environ: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bot), "serve", "--config", str(self.config), "--no-watch"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**bot_env(), **self.environ},
            )  # fmt: skip
        self.starts += 1

    async def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Tally:
    acknowledged: set[str] = field(default_factory=set)  # client ids


def write_config(work: Path, name: str, port: int, telegram: dict[str, Any]) -> Path:
    data = {
        "knowledge": {"path": str(REPO / "knowledge"), "watch": False},
        "index": {"path": str(work / name / "chroma")},
        "store": {"path": str(work / name / "conversations.sqlite3")},
        "server": {"port": port},
        "web": {"messages_per_minute_per_conversation": 100000, "messages_per_minute_per_ip": 1000000},
        "channels": {"telegram": {"enabled": True, "poll_timeout": 1.0, **telegram}},
    }
    (work / name).mkdir(parents=True, exist_ok=True)
    path = work / name / "config.yml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


async def web_customer(server: Server, n: int, messages: int, think: float, tally: Tally) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        conversation: str | None = None
        for k in range(messages):
            await asyncio.sleep(think if k else 0)  # reading the last answer, typing the next question
            cmid = f"web-{n}-{k}"
            body: dict[str, Any] = {"text": QUESTIONS[(n + k) % len(QUESTIONS)], "client_message_id": cmid}
            while True:
                if conversation is not None:
                    body["conversation_id"] = conversation
                try:
                    response = await client.post(f"{server.url}/api/chat", json=body)
                    if response.status_code == 200:
                        conversation = response.json()["conversation_id"]
                        tally.acknowledged.add(cmid)
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)  # the server is down: retry, as the widget does


def chat_id(channel: str, n: int) -> int:
    return (100_000 if channel == "webhook" else 200_000) + n


async def replies_reach(api: Any, chat: int, count: int) -> None:
    while sum(1 for c in api.delivered() if c.params["chat_id"] == str(chat)) < count:
        await asyncio.sleep(0.05)


async def webhook_customer(server: Server, api: Any, n: int, messages: int, think: float, tally: Tally) -> None:
    chat = chat_id("webhook", n)
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        for k in range(messages):
            await asyncio.sleep(think if k else 0)
            message = api.user_message(QUESTIONS[(n + k) % len(QUESTIONS)], chat_id=chat, user_id=chat)
            update = {"update_id": chat * 100 + k, "message": message}
            while True:  # Telegram resends until it gets a 200
                try:
                    response = await client.post(f"{server.url}/telegram/webhook", json=update,
                                                 headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})  # fmt: skip
                    if response.status_code == 200:
                        tally.acknowledged.add(f"telegram:{chat}:{message['message_id']}")
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            await replies_reach(api, chat, k + 1)


async def polling_customer(api: Any, n: int, messages: int, think: float, tally: Tally) -> None:
    chat = chat_id("polling", n)
    for k in range(messages):
        await asyncio.sleep(think if k else 0)
        message = api.user_message(QUESTIONS[(n + k) % len(QUESTIONS)], chat_id=chat, user_id=chat)
        update = api.push_update({"message": message})
        while api.confirmed_below <= update["update_id"]:
            await asyncio.sleep(0.05)
        tally.acknowledged.add(f"telegram:{chat}:{message['message_id']}")
        await replies_reach(api, chat, k + 1)


@dataclass(frozen=True)
class Kill:
    server: str
    after: int  # acknowledged messages
    at: float  # time.monotonic(), the clock the Bot API stand-in stamps its calls with


async def killer(servers: list[Server], tallies: dict[str, Tally], at: list[int], rng: random.Random) -> list[Kill]:
    """Kill a random server each time the acknowledged count reaches the next of `at`; restart it at once."""
    kills = []
    for threshold in at:
        while sum(len(t.acknowledged) for t in tallies.values()) < threshold:
            await asyncio.sleep(0.01)
        server = rng.choice(servers)
        server.kill()
        kills.append(Kill(server.name, threshold, time.monotonic()))
        print(f"kill -9 {server.name} (after {threshold} acknowledged messages); restarting", flush=True)
        server.start()
    return kills


def store_counts(store: Path) -> tuple[dict[str, int], int]:
    """client_message_id -> bot turns answering it; and how many bot turns are not confirmed sent."""
    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT u.client_message_id, COUNT(b.id) FROM turns u LEFT JOIN turns b ON b.reply_to = u.id "
            "WHERE u.role = 'user' GROUP BY u.id"
        ).fetchall()
        unsent = db.execute("SELECT COUNT(*) FROM turns WHERE role = 'bot' AND delivered_at IS NULL").fetchone()[0]
    return {cmid: count for cmid, count in rows}, int(unsent)


def repeats(api: Any, kills: list[Kill]) -> list[dict[str, Any]]:
    """Each reply a chat got twice: how long before the next kill its first copy was accepted by the Bot API
    (a reply in flight when the process died: sent, but not yet recorded as sent)."""
    found = []
    seen: dict[tuple[str, str], float] = {}
    for call in api.delivered():
        key = (call.params["chat_id"], call.params["text"])
        if key not in seen:
            seen[key] = call.at
            continue
        kill = next((k for k in kills if k.at >= seen[key]), None)
        before = None if kill is None else round((kill.at - seen[key]) * 1000, 1)
        found.append({"chat": key[0], "before_kill_ms": before, "kill": None if kill is None else kill.server})
    return found


def account(tally: Tally, answers: dict[str, int], sends: Counter[str] | None, asked: dict[str, int]) -> dict[str, int]:
    """The table's row for one channel. From the store: an acknowledged message not stored or with no bot
    turn is lost, one with two is answered twice. On Telegram the customer's side counts too: more
    sendMessage calls to a chat than it asked questions are answers twice, fewer are answers lost."""
    stored = sum(1 for cmid in tally.acknowledged if cmid in answers)
    lost = sum(1 for cmid in tally.acknowledged if answers.get(cmid, 0) == 0)
    twice = sum(1 for cmid in tally.acknowledged if answers.get(cmid, 0) > 1)
    if sends is not None:
        twice += sum(max(0, sends[chat] - count) for chat, count in asked.items())
        lost = max(lost, sum(max(0, count - sends[chat]) for chat, count in asked.items()))
    sent = sum(asked.values()) if asked else len(tally.acknowledged)
    once = max(0, len(tally.acknowledged) - twice - lost)
    return {"sent": sent, "acknowledged": len(tally.acknowledged), "stored": stored, "answered once": once,
            "answered twice": twice, "lost": lost}  # fmt: skip


async def run(args: argparse.Namespace, work: Path) -> int:
    fake_api = importlib.import_module("tests.telegram_api").FakeBotApi
    rng = random.Random(args.seed)
    with fake_api() as api_a, fake_api() as api_b:
        webhook = {"mode": "webhook", "webhook_url": "https://bot.example/telegram/webhook",
                   "base_url": api_a.base_url}  # fmt: skip
        # The token and webhook secret come from the environment, as in production.
        env = {"TELEGRAM_BOT_TOKEN": api_a.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
        port_a, port_b = free_port(), free_port()
        a = Server("A (web + webhook)", write_config(work, "a", port_a, webhook), port_a, args.bot, work / "a.log", env)
        b = Server("B (polling)", write_config(work, "b", port_b, {"base_url": api_b.base_url}), port_b, args.bot,
                   work / "b.log", env)  # fmt: skip
        for server in (a, b):
            print(f"indexing for {server.name}: {index_knowledge(args.bot, server.config)}", flush=True)
        for server in (a, b):
            server.start()
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        per_channel = max(1, args.customers // 3)
        counts = {"web": args.customers - 2 * per_channel, "webhook": per_channel, "polling": per_channel}
        total = sum(counts.values()) * args.messages
        tallies = {channel: Tally() for channel in CHANNELS}
        at = sorted(rng.randrange(total // 10, total - total // 10) for _ in range(args.kills))
        print(f"{total} messages: {counts}; kills after {at} acknowledged (seed {args.seed})", flush=True)
        started = time.monotonic()
        m, think = args.messages, args.think
        customers = [web_customer(a, n, m, think, tallies["web"]) for n in range(counts["web"])]
        customers += [webhook_customer(a, api_a, n, m, think, tallies["webhook"]) for n in range(counts["webhook"])]
        customers += [polling_customer(api_b, n, m, think, tallies["polling"]) for n in range(counts["polling"])]
        kill_task = asyncio.create_task(killer([a, b], tallies, at, rng))
        await asyncio.gather(*customers)
        kills = await kill_task
        elapsed = time.monotonic() - started
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        settle_deadline = time.monotonic() + args.settle
        while time.monotonic() < settle_deadline:  # the stores' own account: every reply confirmed sent
            if all(store_counts(work / name / "conversations.sqlite3")[1] == 0 for name in ("a", "b")):
                break
            await asyncio.sleep(0.5)
        for server in (a, b):
            server.stop()
        answers_a, _ = store_counts(work / "a" / "conversations.sqlite3")
        answers_b, _ = store_counts(work / "b" / "conversations.sqlite3")
        expected = {
            ch: {str(chat_id(ch, n)): args.messages for n in range(counts[ch])} for ch in ("webhook", "polling")
        }
        twice = repeats(api_a, kills) + repeats(api_b, kills)
        results = {
            "web": account(tallies["web"], answers_a, None, {}),
            "webhook": account(tallies["webhook"], answers_a,
                               Counter(c.params["chat_id"] for c in api_a.delivered()), expected["webhook"]),
            "polling": account(tallies["polling"], answers_b,
                               Counter(c.params["chat_id"] for c in api_b.delivered()), expected["polling"]),
        }  # fmt: skip
    columns = ("sent", "acknowledged", "stored", "answered once", "answered twice", "lost")
    print(f"\n{total} messages in {elapsed:.0f}s, {len(kills)} kills: "
          + ", ".join(f"{k.server} after {k.after} acknowledged" for k in kills))  # fmt: skip
    if twice:
        print(f"replies sent twice (first copy accepted this long before a kill): {twice}")
    print("| channel | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    totals = Counter[str]()
    for channel, row in results.items():
        totals.update(row)
        print(f"| {channel} | " + " | ".join(str(row[c]) for c in columns) + " |")
    print("| **all** | " + " | ".join(f"**{totals[c]}**" for c in columns) + " |")
    (work / "durability-results.json").write_text(
        json.dumps({"machine": machine(), "seed": args.seed, "kills": [k.__dict__ for k in kills], "seconds": elapsed,
                    "results": results, "sent_twice": twice}, indent=2), encoding="utf-8")  # fmt: skip
    print(f"results: {work / 'durability-results.json'}")
    return 1 if totals["lost"] or totals["answered twice"] or totals["acknowledged"] < total else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50, help="customers in all, split over the channels")
    parser.add_argument("--messages", type=int, default=10, help="messages per customer")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--think", type=float, default=0.0, help="seconds a customer waits before the next message")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait for the last replies")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= len(QUESTIONS):
        parser.error(f"--messages must be 1 to {len(QUESTIONS)} (each customer asks each question once)")
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="supportbot-durability-"))
    shutil.rmtree(work / "a", ignore_errors=True)
    shutil.rmtree(work / "b", ignore_errors=True)
    print(f"machine: {machine_line(machine())}", flush=True)
    return asyncio.run(run(args, work))


if __name__ == "__main__":
    sys.exit(main())
