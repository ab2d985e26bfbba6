"""The `bot` command: serve, chat, eval, review; kb and prompts (serving.kb_cli); model (serving.model_cli)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import anyio
import typer

from bot.config import Config, StoreSettings
from bot.knowledge.loader import require_knowledge_dir
from bot.storage.store import ConversationStore
from bot.storage.turns import Turn
from serving.cli_support import (
    ConfigOption,
    KnowledgeOption,
    load_settings,
    operator_errors,
    setup_logging,
    synced_engine,
    write_json,
)
from serving.kb_cli import kb_app, prompts_app
from serving.model_cli import model_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local files; never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="Customer-support bot grounded in your knowledge base.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(prompts_app, name="prompts")
app.add_typer(model_app, name="model")


async def _store_opens(settings: StoreSettings) -> None:
    store = await ConversationStore.from_settings(settings, os.environ)
    await store.close()


@app.command()
def serve(
    config: ConfigOption = Path("config.yml"),
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    watch: Annotated[bool | None, typer.Option("--watch/--no-watch", help="Apply knowledge edits live.")] = None,
) -> None:
    """Index the knowledge base and serve the HTTP API, applying knowledge edits live."""
    from serving.app import create_app
    from serving.runtime import Bot, encoder_model
    from serving.server import serve as serve_http

    setup_logging("info")
    settings = load_settings(config)
    with operator_errors():  # here, as one line, rather than as a traceback from inside the server
        require_knowledge_dir(settings.knowledge.path)
        anyio.run(_store_opens, settings.store)
        encoder_model(settings)  # installed (and, when it comes in parts, unpacked)
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
    serve_http(
        application, host=bind_host, port=bind_port, log_level="warning", proxy_headers=True,
        forwarded_allow_ips=settings.server.forwarded_allow_ips,
    )  # fmt: skip


@app.command()
def chat(config: ConfigOption = Path("config.yml")) -> None:
    """Chat with the bot in this terminal (Ctrl-D or /quit to leave)."""
    from connectors.terminal import run_terminal_chat
    from serving.runtime import running_bot

    setup_logging("warning")
    settings = load_settings(config)

    async def main() -> None:
        async with running_bot(settings) as bot:
            if sys.stdin.isatty():
                typer.echo(f"{settings.bot_name}: ask me anything (Ctrl-D or /quit to leave).")
            await run_terminal_chat(bot.pipeline, sys.stdin, sys.stdout)

    with operator_errors():
        anyio.run(main)


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

    setup_logging("warning")
    settings = load_settings(config)
    try:
        eval_cases = load_cases(cases or settings.eval.cases)
    except CaseFileError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    engine, sync = synced_engine(settings, knowledge)
    engine.index.embedder.load()
    actions = frozenset(hit.action for hit in engine.index.answerable().values() if hit.action)
    report = evaluate(engine.policy.decide, eval_cases, engine.index.answerable_ids(), actions)

    figures = report.figures()
    typer.echo(f"cases: {figures['n_cases']}  (knowledge: {engine.sync.directory}, index sync {sync.seconds:.1f}s)")
    typer.echo(f"answer selection: {engine.index.calibration.summary()}")
    typer.echo(f"top-1 accuracy:       {figures['top1_accuracy']:.2%}")
    typer.echo(f"top-3 accuracy:       {figures['top3_accuracy']:.2%}")
    typer.echo(
        f"asked back:           {figures['clarified']:.2%} ({figures['clarified_with_expected']:.2%} with the "
        f"expected topic among the choices; top-1 or asked with it {figures['top1_or_clarified']:.2%})"
    )
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
        write_json(json_out, report.to_json())
    if min_accuracy is not None and report.top1_accuracy < min_accuracy:
        typer.echo(f"top-1 accuracy {report.top1_accuracy:.2%} is below --min-accuracy {min_accuracy:.2%}", err=True)
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
    approve: Annotated[
        list[str] | None,
        typer.Option(help="Approve CONVERSATION (every reply) or CONVERSATION:TURN (one reply) for fine-tuning."),
    ] = None,
    by: Annotated[str, typer.Option(help="Who approves (recorded with the approval).")] = "operator",
) -> None:
    """What customers asked and what the bot did, newest first: to review, and to grow eval cases from."""
    if approve:
        _approve(load_settings(config), approve, by)
        return
    from bot.conversation.stats import SupportStats
    from bot.evaluation.review import review as reviewed
    from bot.evaluation.review import select, summary, support_summary, write_cases

    settings = load_settings(config)

    async def load() -> tuple[list[tuple[Turn, Turn | None]], SupportStats]:
        store = await ConversationStore.from_settings(settings.store, os.environ)
        try:
            since = time.time() - days * 86400
            return await store.exchanges(since, limit), await store.stats.snapshot(since)
        finally:
            await store.close()

    with operator_errors():
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


def _approve(settings: Config, targets: list[str], by: str) -> None:
    from bot.storage.approvals import ApprovalError

    parsed: list[tuple[str, int | None]] = []
    for target in targets:
        conversation, _, turn = target.partition(":")
        if not conversation or (turn and not turn.isdigit()):
            typer.echo(f"--approve {target!r}: give CONVERSATION or CONVERSATION:TURN (a turn id)", err=True)
            raise typer.Exit(2)
        parsed.append((conversation, int(turn) if turn else None))

    async def record() -> list[str]:
        store = await ConversationStore.from_settings(settings.store, os.environ)
        try:
            said = []
            for conversation, turn in parsed:
                what = f"{conversation}" + (f" reply {turn}" if turn is not None else " (every reply)")
                new = await store.approvals.approve(conversation, turn, by)
                said.append(f"approved {what}" if new else f"already approved: {what}")
            return said
        finally:
            await store.close()

    with operator_errors():
        try:
            lines = anyio.run(record)
        except ApprovalError as err:
            typer.echo(f"not approved: {err}", err=True)
            raise typer.Exit(1) from err
    for line in lines:
        typer.echo(line)


def main() -> None:
    app()
