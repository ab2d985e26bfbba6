"""`bot kb check | index | overlaps | tune` and `bot prompts check`: the operator's checks of what they edit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import anyio
import typer

from bot.config import ActionsSettings, Config
from bot.knowledge.model import KnowledgeItem, Problem
from serving.cli_support import (
    ConfigOption,
    KnowledgeOption,
    ProgressPrinter,
    load_settings,
    operator_errors,
    setup_logging,
    synced_engine,
    tune_now,
    write_json,
)

kb_app = typer.Typer(help="Check and index the knowledge base.", no_args_is_help=True)
prompts_app = typer.Typer(help="Check the prompt templates for the dialogue model.", no_args_is_help=True)


@kb_app.command("check")
def kb_check(config: ConfigOption = Path("config.yml"), knowledge: KnowledgeOption = None) -> None:
    """Validate every knowledge file; report each problem with file, line and reason."""
    from bot.knowledge.limits import MAX_TEXTS
    from bot.knowledge.loader import read_knowledge_dir, vet
    from bot.knowledge.model import FaqEntry, Form, OutOfScopeGroup, Passage, texts_to_embed
    from bot.knowledge.names import NameTable

    settings = load_settings(config)
    directory = knowledge or settings.knowledge.path
    with operator_errors():
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

    directory = load_settings(config).prompts.path
    library = PromptLibrary(directory)
    for problem in library.problems:
        typer.echo(f"{directory / problem.file}:{problem.line}: {problem.message}")
    if library.problems:
        typer.echo(f"{len(library.problems)} problems in {directory}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{len(SPECS)} templates in {directory}; no problems")


@kb_app.command("index")
def kb_index(config: ConfigOption = Path("config.yml"), knowledge: KnowledgeOption = None) -> None:
    """Bring the index in line with the knowledge files (only changed texts are embedded)."""
    from serving.runtime import build_engine

    setup_logging("warning")
    settings = load_settings(config)
    with operator_errors():
        engine = build_engine(settings, knowledge_dir=knowledge)
        report = engine.sync.run(ProgressPrinter())
        tune_now(engine)
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


@kb_app.command("overlaps")
def kb_overlaps(
    config: ConfigOption = Path("config.yml"),
    knowledge: KnowledgeOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many item pairs.")] = 20,
    examples: Annotated[int, typer.Option(min=1, help="Phrasings shown per pair.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every crossing here.")] = None,
) -> None:
    """Find customer phrasings that another item answers first: questions answered in two places."""
    setup_logging("warning")
    engine, _ = synced_engine(load_settings(config), knowledge)
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
        write_json(json_out, report.to_json())


@kb_app.command("tune")
def kb_tune(
    config: ConfigOption = Path("config.yml"),
    knowledge: KnowledgeOption = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Training threads (default: index.threads).")] = None,
) -> None:
    """Tune the encoder (index.model) on the knowledge base's own phrasings; prints the folder to use."""
    from bot.knowledge.loader import read_knowledge_dir, vet
    from bot.retrieval.tuning import NothingToTune, tune
    from serving.runtime import bundled_encoder, encoder_cache

    setup_logging("warning")
    settings = load_settings(config)
    directory = knowledge or settings.knowledge.path
    with operator_errors():
        vetting = vet(read_knowledge_dir(directory))
        base = bundled_encoder(settings)
    for problem in vetting.problems:
        typer.echo(f"not used: {directory / problem.file}:{problem.line}: {problem.message}", err=True)
    items = {item.id: item.utterances() for file in vetting.accepted for item in file.items if item.utterances()}
    typer.echo(f"tuning {settings.index.model} on the phrasings of {len(items)} items (once per knowledge version)")
    try:
        result = tune(
            base,
            settings.index.model,
            items,
            encoder_cache(settings),
            threads or settings.index.threads,
            ProgressPrinter("trained", "batches"),
        )
    except NothingToTune as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    done = "already tuned for these phrasings" if result.reused else f"tuned in {result.seconds:.0f}s"
    typer.echo(f"{done} ({result.pairs} pairs): {result.model}")
    typer.echo(
        f"to use it, set in {config}:\n  index:\n    embedding_model: {result.model}\n"
        "the next start embeds the knowledge base again with it (once)"
    )
