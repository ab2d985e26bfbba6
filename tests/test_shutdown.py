"""Stopping `bot serve` while it is busy: it exits cleanly, never aborting in the middle of a computation."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import psutil

from tests.botprocess import BotProcess, wait_until
from tests.conftest import ConfigFactory, free_port
from tests.test_live_reload import NEW_FAQ


def test_serve_stops_cleanly_while_a_live_edit_is_still_being_calibrated(
    write_config: ConfigFactory, knowledge_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    with BotProcess(write_config(server={"port": port}), port, tmp_path / "serve.log") as server:
        assert server.process is not None
        # Started without --host, it listens on loopback only, and speaks plain HTTP there.
        connections = psutil.Process(server.process.pid).net_connections("tcp")
        assert {c.laddr.ip for c in connections if c.status == "LISTEN"} == {"127.0.0.1"}
        with server.client() as client:
            # An edit: it answers at once, and its recalibration (seconds) starts in the background.
            (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)

            def edit_served() -> bool:
                reply = client.post("/api/chat", json={"text": "are dogs allowed in the shop?"}).json()
                return "Well-behaved dogs" in reply["reply"]

            wait_until(edit_served, "the edit to be served")
            # Stop while /health says the calibration is still running (it takes seconds; this is ms).
            wait_until(
                lambda: (server.health() or {}).get("knowledge", {}).get("calibrating"), "the calibration to run"
            )
        code = server.stop()
    log = server.log()
    assert code == 0, log[-3000:]
    assert "terminate called" not in log
    started = log.rindex("calibrating answer selection")  # the live edit's calibration
    assert "calibration stopped: shutting down" in log[started:], log[-3000:]
    assert "answer selection calibrated" not in log[started:], log[-3000:]


def test_serve_stops_promptly_while_an_agent_has_the_inbox_feed_open(
    write_config: ConfigFactory, tmp_path: Path
) -> None:
    """The inbox feed never ends by itself, and the server waits for open responses: stopping ends it."""
    port, token = free_port(), "alice-shutdown-token-0123"
    environ = {"SUPPORTBOT_AGENT_TOKENS": f"alice:{token}"}
    connected = threading.Event()
    ended: list[str] = []  # how the feed ended, as its reader saw it

    def read_feed(url: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream("GET", f"{url}/api/agent/events", headers=headers, timeout=120, trust_env=False) as feed:
                for line in feed.iter_lines():
                    if line == ": connected":
                        connected.set()
            ended.append("ended")
        except httpx.HTTPError as err:
            ended.append(f"broken: {err!r}")

    with BotProcess(write_config(server={"port": port}), port, tmp_path / "serve.log", environ=environ) as server:
        reader = threading.Thread(target=read_feed, args=(server.url,), daemon=True)
        reader.start()
        assert connected.wait(60), "the inbox feed did not open"
        code = server.stop()
        reader.join(60)
    log = server.log()
    assert code == 0, log[-3000:]
    assert ended == ["ended"], log[-3000:]  # closed by the server as it stopped, not cut off
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
