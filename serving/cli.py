"""The `bot` command: serve, chat, kb check | index | overlaps, eval, review."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from bot.config import ActionsSettings, Config, ConfigError, load_config
from bot.knowledge.loader import KnowledgeDirMissing, require_knowledge_dir
from bot.knowledge.model import KnowledgeItem, Problem
from bot.storage.store import ConversationStore, StoreError
from bot.storage.turns import Turn

if TYPE_CHECKING:
    from bot.retrieval.index import SyncReport
    from serving.runtime import Engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local files; never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="Customer-support bot grounded in your knowledge base.", no_args_is_help=True)
kb_app = typer.Typer(help="Check and index the knowledge base.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
prompts_app = typer.Typer(help="Check the prompt templates for the dialogue model.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
model_app = typer.Typer(help="Serve the dialogue model with vLLM (GPU hosts).", no_args_is_help=True)
app.add_typer(model_app, name="model")

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="Path to config.yml.", dir_okay=False),
]
KnowledgeOption = Annotated[
    Path | None,
    typer.Option("--knowledge", help="Knowledge directory (default: knowledge.path from config).", file_okay=False),
]


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        typer.echo(f"configuration error:\n{err}", err=True)
        raise typer.Exit(2) from err


def _logging(default: str) -> None:
    logging.basicConfig(
        level=os.environ.get("BOT_LOG_LEVEL", default).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def _operator_errors() -> Iterator[None]:
    """What an operator fixes in their set-up (a missing folder, a file that is not a store): one line, exit 2."""
    try:
        yield
    except (KnowledgeDirMissing, StoreError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err


async def _store_opens(path: Path) -> None:
    store = await ConversationStore.open(path)
    await store.close()


@app.command()
def serve(
    config: ConfigOption = Path("config.yml"),
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    watch: Annotated[bool | None, typer.Option("--watch/--no-watch", help="Apply knowledge edits live.")] = None,
) -> None:
    """Index the knowledge base and serve the HTTP API, applying knowledge edits live."""
    import uvicorn

    from serving.app import create_app
    from serving.runtime import Bot

    _logging("info")
    settings = _config(config)
    with _operator_errors():  # here, as one line, rather than as a traceback from inside the server
        require_knowledge_dir(settings.knowledge.path)
        anyio.run(_store_opens, settings.store.path)
    bind_host = host or settings.server.host
    bind_port = settings.server.port if port is None else port

    def announce(bot: Bot) -> None:
        report = bot.startup_sync
        typer.echo(f"knowledge: {report.summary()}", err=True)
        for file in report.rejected:
            for problem in file.problems:
                typer.echo(f"  not applied: {problem}", err=True)
        url = f"http://{bind_host}:{bind_port}"
        typer.echo(
            f"\nSupport bot ready. Chat with it:\n"
            f"  in a browser (demo store page with the widget): {url}/\n"
            f"  curl -s {url}/api/chat -H 'content-type: application/json' \\\n"
            f'       -d \'{{"text": "How do I track my order?"}}\'\n'
            f"  or in a terminal: .venv/bin/bot chat --config {config}\n"
            f"  API docs: {url}/docs   health: {url}/health\n",
            err=True,
        )

    application = create_app(settings, watch=watch, on_ready=announce)
    uvicorn.run(application, host=bind_host, port=bind_port, log_level="warning")


@app.command()
def chat(config: ConfigOption = Path("config.yml")) -> None:
    """Chat with the bot in this terminal (Ctrl-D or /quit to leave)."""
    from connectors.terminal import run_terminal_chat
    from serving.runtime import running_bot

    _logging("warning")
    settings = _config(config)

    async def main() -> None:
        async with running_bot(settings) as bot:
            if sys.stdin.isatty():
                typer.echo(f"{settings.bot_name}: ask me anything (Ctrl-D or /quit to leave).")
            await run_terminal_chat(bot.pipeline, sys.stdin, sys.stdout)

    with _operator_errors():
        anyio.run(main)


@kb_app.command("check")
def kb_check(config: ConfigOption = Path("config.yml"), knowledge: KnowledgeOption = None) -> None:
    """Validate every knowledge file; report each problem with file, line and reason."""
    from bot.knowledge.limits import MAX_TEXTS
    from bot.knowledge.loader import read_knowledge_dir, vet
    from bot.knowledge.model import FaqEntry, Form, OutOfScopeGroup, Passage, texts_to_embed
    from bot.knowledge.names import NameTable

    settings = _config(config)
    directory = knowledge or settings.knowledge.path
    with _operator_errors():
        files = read_knowledge_dir(directory)
    vetting = vet(files)
    for problem in vetting.problems:
        typer.echo(f"{directory / problem.file}:{problem.line}: {problem.message}")
    items = [item for f in vetting.accepted for item in f.items]
    faqs = sum(isinstance(i, FaqEntry) for i in items)
    groups = sum(isinstance(i, OutOfScopeGroup) for i in items)
    passages = [i for i in items if isinstance(i, Passage)]
    asked = sum(bool(p.questions) for p in passages)
    summary = f"{len(files)} files: {faqs} FAQ entries, {len(passages)} passages"
    if passages:
        summary += f" ({asked} with questions)"
    if groups:
        summary += f", {groups} out-of-scope groups"
    forms = sum(isinstance(i, Form) for i in items)
    if forms:
        summary += f", {forms} form{'' if forms == 1 else 's'}"
    names = NameTable.of_items(items)
    if len(names) or names.ignored:
        summary += f" ({len(names)} name{'' if len(names) == 1 else 's'})"
    for ignored in names.ignored:
        typer.echo(
            f"note: out-of-scope group {ignored.group!r} lists {ignored.name!r}, which the knowledge mentions:"
            " it declines nothing"
        )
    texts = sum(texts_to_embed(item) for item in items)
    typer.echo(f"{texts:,} texts to embed, of the {MAX_TEXTS:,} a knowledge base may have")
    problems = list(vetting.problems) + _action_problems(settings, items, directory)
    for problem in problems[len(vetting.problems) :]:
        typer.echo(f"{directory / problem.file}:{problem.line}: {problem.message}")
    if problems:
        files_with = len({p.file for p in problems})
        typer.echo(f"{summary}; {len(problems)} problems in {files_with} files", err=True)
        raise typer.Exit(1)
    typer.echo(f"{summary}; no problems")


def _action_problems(settings: Config, items: list[KnowledgeItem], directory: Path) -> list[Problem]:
    """Actions the knowledge names that the action server does not list (it is started for the check
    when actions.start is true); a note when no actions are configured."""
    from bot.actions.checks import action_problems, named_actions

    named = named_actions(items)
    if not named:
        return []
    if settings.actions is None:
        typer.echo(f"note: {len(named)} FAQ entries or forms name an action, but no actions are configured "
                   "(actions: in config.yml): entries are answered from their text")  # fmt: skip
        return []
    try:
        listed = anyio.run(_listed_actions, settings.actions)
    except Exception as err:  # unreachable, refused, failed to start: the check cannot pass
        return [Problem(named[0][1], named[0][2], f"cannot check the actions this names: {err}")]
    return action_problems(items, listed, settings.actions.url)


async def _listed_actions(settings: ActionsSettings) -> set[str]:
    from bot.actions.client import ActionClient
    from serving.action_server import ActionServerProcess

    client = ActionClient(settings, os.environ)
    server = ActionServerProcess(settings, os.environ, Path(tempfile.gettempdir()) / "supportbot-action-check.log")
    try:
        if settings.start:
            await server.start(client)
        return await client.names()
    finally:
        await client.aclose()
        await server.stop()


@prompts_app.command("check")
def prompts_check(config: ConfigOption = Path("config.yml")) -> None:
    """Validate the prompt templates; report each problem with file, line and reason."""
    from bot.llm.prompts import SPECS, PromptLibrary

    directory = _config(config).prompts.path
    library = PromptLibrary(directory)
    for problem in library.problems:
        typer.echo(f"{directory / problem.file}:{problem.line}: {problem.message}")
    if library.problems:
        typer.echo(f"{len(library.problems)} problems in {directory}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{len(SPECS)} templates in {directory}; no problems")


class _ProgressPrinter:
    """Prints embedding progress at most every two seconds, and at the end."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self._last >= 2.0:
            self._last = now
            typer.echo(f"  embedded {done}/{total} texts ({done * 100 // max(total, 1)}%)", err=True)


@kb_app.command("index")
def kb_index(config: ConfigOption = Path("config.yml"), knowledge: KnowledgeOption = None) -> None:
    """Bring the index in line with the knowledge files (only changed texts are embedded)."""
    from serving.runtime import build_engine

    _logging("warning")
    settings = _config(config)
    engine = build_engine(settings, knowledge_dir=knowledge)
    with _operator_errors():
        report = engine.sync.run(_ProgressPrinter())
    typer.echo(
        f"added {len(report.added)}, updated {len(report.updated)}, removed {len(report.removed)}, "
        f"unchanged {report.unchanged}; embedded {report.texts_embedded} texts in {report.seconds:.2f}s"
    )
    for label, ids in (("added", report.added), ("updated", report.updated), ("removed", report.removed)):
        if ids:
            typer.echo(f"  {label}: {', '.join(ids[:20])}{' …' if len(ids) > 20 else ''}")
    typer.echo(f"answer selection: {engine.index.calibration.summary()}")
    for file in report.rejected:
        for problem in file.problems:
            typer.echo(f"not applied (last good version kept): {problem}", err=True)
    if report.rejected:
        raise typer.Exit(1)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _synced_engine(settings: Config, knowledge: Path | None) -> tuple[Engine, SyncReport]:
    """The engine on `knowledge` (in a private index, so the configured one is never touched), synced."""
    from serving.runtime import build_engine, eval_index_path

    index_path = eval_index_path(settings, knowledge) if knowledge is not None else None
    engine = build_engine(settings, knowledge_dir=knowledge, index_path=index_path)
    with _operator_errors():
        sync = engine.sync.run(_ProgressPrinter())
    for file in sync.rejected:
        for problem in file.problems:
            typer.echo(f"not applied: {problem}", err=True)
    return engine, sync


@kb_app.command("overlaps")
def kb_overlaps(
    config: ConfigOption = Path("config.yml"),
    knowledge: KnowledgeOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many item pairs.")] = 20,
    examples: Annotated[int, typer.Option(min=1, help="Phrasings shown per pair.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every crossing here.")] = None,
) -> None:
    """Find customer phrasings that another item answers first: questions answered in two places."""
    _logging("warning")
    engine, _ = _synced_engine(_config(config), knowledge)
    report, catalog = engine.index.overlaps(engine.policy.threshold)

    def where(item_id: str) -> str:
        hit = catalog.get(item_id)
        return item_id if hit is None else f"{item_id} ({hit.file}:{hit.line})"

    typer.echo(
        f"{report.checked} phrasings checked, each hidden from its item and ranked against everything else "
        f"(answer threshold {engine.policy.threshold:.3f}; answer selection: {engine.index.calibration.summary()})"
    )
    overlaps = report.overlaps()
    if not overlaps:
        typer.echo("no phrasing would be answered by another item")
    else:
        typer.echo(
            f"{len(report.crossings)} would be answered by another item. For each pair: move the phrasing to the "
            "item that answers it, reword it, or make the two items answer different questions."
        )
    for overlap in overlaps[:limit]:
        typer.echo(f"{len(overlap.crossings):4d}  {where(overlap.item_id)}  ->  {where(overlap.found_id)}")
        for crossing in overlap.crossings[:examples]:
            typer.echo(f"        {crossing.found_score:.2f} vs own {crossing.own_score:.2f}  {crossing.text!r}")
    if len(overlaps) > limit:
        typer.echo(f"… and {len(overlaps) - limit} more pairs (--limit, or --json for all)")
    if json_out is not None:
        _write_json(json_out, report.to_json())


@app.command("eval")
def eval_command(
    config: ConfigOption = Path("config.yml"),
    knowledge: KnowledgeOption = None,
    cases: Annotated[Path | None, typer.Option(help="CSV of text,expected (default: eval.cases).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures and every case here.")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="Exit 1 if top-1 accuracy is below this.")] = None,
) -> None:
    """Measure answer selection on labelled messages, like `rasa test nlu`."""
    from bot.evaluation.scoring import CaseFileError, evaluate, load_cases

    _logging("warning")
    settings = _config(config)
    try:
        eval_cases = load_cases(cases or settings.eval.cases)
    except CaseFileError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    engine, sync = _synced_engine(settings, knowledge)
    engine.index.embedder.load()
    actions = frozenset(hit.action for hit in engine.index.answerable().values() if hit.action)
    report = evaluate(engine.policy.decide, eval_cases, engine.index.answerable_ids(), actions)

    figures = report.figures()
    typer.echo(f"cases: {figures['n_cases']}  (knowledge: {engine.sync.directory}, index sync {sync.seconds:.1f}s)")
    typer.echo(f"answer selection: {engine.index.calibration.summary()}")
    typer.echo(f"top-1 accuracy:       {figures['top1_accuracy']:.2%}")
    typer.echo(f"top-3 accuracy:       {figures['top3_accuracy']:.2%}")
    typer.echo(f"in-scope accuracy:    {figures['in_scope_accuracy']:.2%}")
    typer.echo(f"out-of-scope prec.:   {figures['oos_precision']:.2%}")
    typer.echo(f"out-of-scope recall:  {figures['oos_recall']:.2%}")
    if report.wrong_answers:
        typer.echo(
            f"wrong answers:        {report.wrong_answers}, of which "
            f"{figures['wrong_answers_offering_expected']:.0%} offered the expected topic as related"
        )
    typer.echo(f"latency p50 / p95:    {figures['latency_ms_p50']:.1f} ms / {figures['latency_ms_p95']:.1f} ms")
    confused = report.confused_pairs()
    if confused:
        typer.echo("most confused (expected -> predicted):")
        for expected, predicted, count in confused:
            typer.echo(f"  {count:3d}  {expected} -> {predicted}")
    if report.unknown_expected:
        typer.echo(
            f"warning: expected ids not answerable from the knowledge base: {', '.join(report.unknown_expected)} "
            "(a case the bot should decline expects out_of_scope, not an out-of-scope group)",
            err=True,
        )
    if json_out is not None:
        _write_json(json_out, report.to_json())
    if min_accuracy is not None and report.top1_accuracy < min_accuracy:
        typer.echo(f"top-1 accuracy {report.top1_accuracy:.2%} is below --min-accuracy {min_accuracy:.2%}", err=True)
        raise typer.Exit(1)


@model_app.command("serve")
def model_serve(config: ConfigOption = Path("config.yml")) -> None:
    """Run vLLM's OpenAI-compatible server for `model_server.model` until Ctrl-C (needs a GPU and the vllm extra)."""
    from serving.model_server import (
        ModelServerError,
        ModelServerProcess,
        VllmNotInstalledError,
        serve_until_stopped,
        vllm_executable,
    )

    _logging("info")
    settings = _config(config)
    server = settings.model_server
    if server is None:
        typer.echo(
            f"{config}: there is no `model_server:` section; add one naming the model to serve, "
            "e.g. `model_server: {model: models/my-model, served_model_name: support}`",
            err=True,
        )
        raise typer.Exit(2)
    try:
        executable = vllm_executable()
    except VllmNotInstalledError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    process = ModelServerProcess(server, executable, echo=sys.stderr)

    def announce() -> None:
        name = server.served_model_name or server.model
        typer.echo(f"\nModel server ready. Point the bot at it in {config}:\n", err=True)
        typer.echo(f"  llm: {{base_url: {process.url}/v1, model: {name}}}\n", err=True)
        if server.lora_adapters:
            typer.echo(f"  LoRA adapters, served as models of their own: {', '.join(server.lora_adapters)}\n", err=True)

    try:
        code = serve_until_stopped(process, announce)
    except ModelServerError as err:
        typer.echo(f"model server failed: {err}", err=True)
        raise typer.Exit(1) from err
    if code is not None:
        typer.echo(f"vLLM exited by itself with code {code}", err=True)
        raise typer.Exit(1)


@app.command()
def review(
    config: ConfigOption = Path("config.yml"),
    days: Annotated[float, typer.Option(min=0, help="How far back to look.")] = 7.0,
    declined: Annotated[bool, typer.Option("--declined", help="Only messages the bot declined.")] = False,
    below: Annotated[float | None, typer.Option(help="Only answers and declines with a confidence under this.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many of the newest messages.")] = 500,
    cases: Annotated[
        Path | None, typer.Option(help="Also write them as a draft text,expected case file for bot eval.")
    ] = None,
) -> None:
    """What customers asked and what the bot did, newest first: to review, and to grow eval cases from."""
    from bot.conversation.stats import SupportStats
    from bot.evaluation.review import review as reviewed
    from bot.evaluation.review import select, summary, support_summary, write_cases

    settings = _config(config)

    async def load() -> tuple[list[tuple[Turn, Turn | None]], SupportStats]:
        store = await ConversationStore.open(settings.store.path)
        try:
            since = time.time() - days * 86400
            return await store.exchanges(since, limit), await store.stats.snapshot(since)
        finally:
            await store.close()

    with _operator_errors():
        exchanges, stats = anyio.run(load)
        messages = reviewed(exchanges)
    shown = select(messages, declined_only=declined, below=below)
    for message in shown:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(message.received_at))
        confidence = "    " if message.confidence is None else f"{message.confidence:.2f}"
        text = " ".join(message.text.split())
        typer.echo(f"{when}  {confidence}  {message.outcome:40.40s}  {text[:100]}{'…' if len(text) > 100 else ''}")
    filtered = f"; {len(shown)} shown" if len(shown) != len(messages) else ""
    typer.echo(f"{summary(messages)} in the last {days:g} days{filtered}")
    for line in support_summary(stats):
        typer.echo(line)
    if cases is not None:
        rows = write_cases(cases, shown)
        typer.echo(f"wrote {rows} draft cases to {cases}: correct the labels that are wrong, then run bot eval on them")


def main() -> None:
    app()
