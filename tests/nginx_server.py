"""Debian's nginx on a loopback port, balancing bot processes (scripts/test.sh installs it as root).

The config is the one docs/DEPLOYMENT.md gives operators (deploy/nginx.conf), with the ports and paths of
the test filled in: what is tested is what they run."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TEMPLATE = REPO / "deploy" / "nginx.conf"
NEEDS_NGINX = pytest.mark.needs(
    "Debian's nginx (the load balancer in front of several bot processes)",
    Path(NGINX).exists(),
    "install it with `apt-get install nginx` (scripts/test.sh does, when run as root)",
)


def nginx_config(listen: str, upstreams: list[str], folder: Path) -> str:
    """deploy/nginx.conf with its `server 127.0.0.1:800N` lines replaced by `upstreams`, listening on
    `listen`, with its files in `folder` (the site's own settings stay as operators have them)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("server 127.0.0.1:800"):
            if not any("bot-upstreams" in kept for kept in lines[-1:]):
                lines.extend(f"        server {upstream} max_fails=1 fail_timeout=2s;  # bot-upstreams"
                             for upstream in upstreams)  # fmt: skip
            continue
        if stripped.startswith("listen "):
            line = f"        listen {listen};"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    temp = "".join(
        f"    {kind}_temp_path {folder / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    return text.replace("/var/log/nginx/supportbot", str(folder / "supportbot")).replace(
        "/run/supportbot-nginx.pid", str(folder / "nginx.pid")
    )


class NginxServer:
    """nginx in the foreground (its own prefix, pid and logs in `folder`) until stop()."""

    def __init__(self, port: int, upstreams: list[str], folder: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.folder = folder
        self.access_log = folder / "supportbot.access.log"
        self._config = folder / "nginx.conf"
        self._config.write_text(nginx_config(f"127.0.0.1:{port}", upstreams, folder), encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = (self.folder / "nginx.out").open("ab")
        self._process = subprocess.Popen(
            [NGINX, "-p", str(self.folder), "-c", str(self._config), "-e", str(self.folder / "error.log"),
             "-g", "daemon off;"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited ({self._process.returncode}); see {self.folder}/error.log")
            try:
                httpx.get(f"{self.url}/nginx-health", timeout=2, trust_env=False)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not answer within {timeout:g} s") from None
                time.sleep(0.1)

    def upstreams_used(self) -> set[str]:
        """The bot processes nginx sent requests to, from its access log (`upstream=` field)."""
        if not self.access_log.exists():
            return set()
        found: set[str] = set()
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            _, marker, rest = line.partition('upstream="')
            if marker:
                found.update(part.strip() for part in rest.partition('"')[0].split(",") if part.strip() != "-")
        return found

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
