"""Stopping `bot serve` while it is busy: it exits cleanly, never aborting in the middle of a computation."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, ConfigFactory, free_port
from tests.test_live_reload import NEW_FAQ

BOT = REPO / ".venv" / "bin" / "bot"


def test_serve_stops_cleanly_while_a_live_edit_is_still_being_calibrated(
    write_config: ConfigFactory, knowledge_dir: Path
) -> None:
    port = free_port()
    config = write_config(server={"port": port})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([str(BOT), "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            # An edit: it answers at once, and its recalibration (seconds) starts in the background.
            (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
            while time.monotonic() < deadline:
                reply = client.post("/api/chat", json={"text": "are dogs allowed in the shop?"}).json()
                if "Well-behaved dogs" in reply["reply"]:
                    break
                time.sleep(0.05)
        server.send_signal(signal.SIGINT)
        _, log = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, log[-3000:]
    assert "terminate called" not in log
    # Either the calibration was stopped at its next step, or it had just finished.
    assert "calibration stopped: shutting down" in log or "answer selection calibrated" in log, log[-3000:]
