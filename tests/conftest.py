"""Shared fixtures: the real embedding model, loaded once; demo knowledge copied per test; real servers."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Config, load_config
from bot.knowledge.loader import read_knowledge_dir
from bot.pipeline import Responder
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from bot.storage.store import ConversationStore
from serving.app import create_app
from serving.server import BotServer
from tests.chroma_server import CHROMA, ChromaServer
from tests.model_server import ModelServer, RecordingProxy
from tests.postgres_server import NEEDS_POSTGRES, PostgresServer
from tests.redis_server import REDIS_SERVER, RedisServer

pytest_plugins = ["tests.telegram_fixtures", "tests.browser"]

REPO = Path(__file__).resolve().parent.parent
DEMO_KNOWLEDGE = REPO / "knowledge"
DEMO_CASES = REPO / "evals" / "demo-cases.csv"


# -- parts a machine may lack: never skipped in silence, and a failure under CI=true ---------------------

NEEDS_MARK = "needs"  # @pytest.mark.needs(part, present, how_to_enable)
NOT_RUN = "not run: "  # how a skip for a missing part starts, so the summary can find it


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL 15 cluster for the session (tests mark themselves NEEDS_POSTGRES); a database per test."""
    server = PostgresServer(free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database of the session's PostgreSQL (its password: postgres_server.password)."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:16]}")


@dataclass(frozen=True)
class StoreLocation:
    """Where a store test's conversations go: a SQLite file, or a PostgreSQL database and its password."""

    where: Path | str
    password: str | None = None

    async def open(self) -> ConversationStore:
        return await ConversationStore.open(self.where, self.password)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRES)])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Each store test runs on both implementations: the same suite for SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return StoreLocation(tmp_path / "conversations.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return StoreLocation(request.getfixturevalue("postgres_url"), server.password)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{NEEDS_MARK}(part, present, enable): the test needs a part of the machine")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(NEEDS_MARK):
        part, present, enable = mark.args
        if present:
            continue
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{part} is missing, and CI runs every test: {enable}", pytrace=False)
        pytest.skip(f"{NOT_RUN}{part} is missing: {enable}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run with one line per missing part: which tests did not run and how to enable them."""
    terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
    if terminalreporter is None:
        return
    missing: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        if reason.startswith("Skipped: "):
            reason = reason.removeprefix("Skipped: ")
        if reason.startswith(NOT_RUN):
            missing.setdefault(reason.removeprefix(NOT_RUN), []).append(report.nodeid)
    for reason, tests in missing.items():
        files = sorted({nodeid.split("::")[0] for nodeid in tests})
        terminalreporter.write_line(
            f"NOT RUN: {len(tests)} tests in {', '.join(files)}, because {reason}", yellow=True, bold=True
        )


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once for the whole session."""
    model = Embedder(threads=1)
    model.load()
    return model


@pytest.fixture(scope="session")
def demo_index_template(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The demo knowledge base indexed once per session; tests get copies of this Chroma folder."""
    path = tmp_path_factory.mktemp("demo-index") / "chroma"
    index = KnowledgeIndex.open(path, "knowledge", embedder)
    report = index.sync(read_knowledge_dir(DEMO_KNOWLEDGE))
    assert not report.rejected, [str(p) for f in report.rejected for p in f.problems]
    return path


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    """A private, editable copy of the demo knowledge base."""
    target = tmp_path / "knowledge"
    shutil.copytree(DEMO_KNOWLEDGE, target)
    return target


ConfigFactory = Callable[..., Path]


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """A private, editable copy of the prompt templates."""
    target = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", target)
    return target


@pytest.fixture
def write_config(tmp_path: Path, knowledge_dir: Path, demo_index_template: Path, prompts_dir: Path) -> ConfigFactory:
    """Writes a config.yml pointing at the test's knowledge copy and private data paths."""

    index_path = tmp_path / "data" / "chroma"
    shutil.copytree(demo_index_template, index_path)

    def write(**sections: dict[str, object]) -> Path:
        data: dict[str, object] = {
            "knowledge": {"path": str(knowledge_dir), "watch_debounce_ms": 50},
            "index": {"path": str(index_path)},
            "store": {"path": str(tmp_path / "data" / "conversations.sqlite3")},
            "eval": {"cases": str(DEMO_CASES)},
            "prompts": {"path": str(prompts_dir)},
        }
        for name, values in sections.items():
            merged = dict(data.get(name, {}))  # type: ignore[call-overload]
            merged.update(values)
            data[name] = merged
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def config(write_config: ConfigFactory) -> Config:
    return load_config(write_config())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """The real app under uvicorn on a loopback port, in a background thread."""

    def __init__(
        self,
        config: Config,
        embedder: Embedder,
        watch: bool = False,
        responder: Responder | None = None,
        port: int | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/ws"
        app = create_app(config, embedder=embedder, watch=watch, responder=responder, environ=environ or {})
        self.app = app
        self._server = BotServer(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def live_server(config: Config, embedder: Embedder) -> Iterator[LiveServer]:
    with LiveServer(config, embedder) as server:
        yield server


# -- a real OpenAI-compatible model server (transformers serve) and a recording proxy in front of it --


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dialogue model, trained until every prompt shape the bot sends gives its verified reply."""
    from tests.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    build_tiny_model(out, DEMO_KNOWLEDGE, REPO / "prompts")
    return out.resolve()


@pytest.fixture(scope="session")
def model_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(tiny_model_dir, free_port(), tmp_path_factory.mktemp("model-server") / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def model_proxy(model_server: ModelServer) -> Iterator[RecordingProxy]:
    with RecordingProxy(model_server.url, free_port()) as proxy:
        yield proxy


@pytest.fixture
def llm_settings(model_proxy: RecordingProxy, model_server: ModelServer) -> dict[str, object]:
    """The `llm:` config section pointing the bot at the proxy, with budgets generous for a busy CI box."""
    return {
        "base_url": f"{model_proxy.url}/v1",
        "model": model_server.model,
        "max_tokens": 24,
        "first_token_timeout_s": 10.0,
        "stall_timeout_s": 10.0,
        "total_timeout_s": 30.0,
        "max_retries": 0,
    }


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests mark themselves NEEDS_REDIS); keys are per test."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is missing")  # reached only without the mark; the mark says how to install
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One real Chroma server for the session (tests mark themselves NEEDS_CHROMA); a collection per test."""
    if not CHROMA.exists():
        pytest.skip("the chroma command is missing")  # reached only without the mark; the mark says how
    server = ChromaServer(free_port(), tmp_path_factory.mktemp("chroma-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
