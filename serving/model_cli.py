"""`bot model …`: the dialogue model's side (serving it with vLLM, building its fine-tuning set)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from serving.cli_support import (
    ConfigOption,
    KnowledgeOption,
    load_settings,
    operator_errors,
    setup_logging,
    synced_engine,
)

model_app = typer.Typer(help="The dialogue model: serve it (vLLM, GPU hosts) and build its training data.",
                        no_args_is_help=True)  # fmt: skip


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

    setup_logging("info")
    settings = load_settings(config)
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


@model_app.command("dataset")
def model_dataset(
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl, held_out.jsonl and manifest.json.")],
    config: ConfigOption = Path("config.yml"),
    knowledge: KnowledgeOption = None,
    held_out: Annotated[float, typer.Option(min=0.05, max=0.9, help="Share of knowledge items held out.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split by item.")] = 0,
) -> None:
    """Build the fine-tuning set from the knowledge base and the approved conversations, in the live prompts."""
    from serving.training.build import DatasetError, build_from_sources

    setup_logging("warning")
    settings = load_settings(config)
    directory = knowledge or settings.knowledge.path
    settings = settings.model_copy(update={"knowledge": settings.knowledge.model_copy(update={"path": directory})})
    engine, _ = synced_engine(settings, directory)  # a private index: a running bot's is never touched
    try:
        with operator_errors():
            dataset, skipped = build_from_sources(settings, engine.policy, held_out, seed)
    except DatasetError as err:
        typer.echo(f"cannot build the dataset: {err}", err=True)
        raise typer.Exit(2) from err
    dataset.write(out)
    sources = dataset.manifest["sources"]
    typer.echo(f"wrote {out}: {len(dataset.train)} training and {len(dataset.held_out)} held-out examples "
               f"({len(dataset.manifest['held_out_items'])} items held out, seed {seed})")  # fmt: skip
    for side in ("train", "held_out"):
        typer.echo(f"  {side}: " + ", ".join(f"{n} {source}" for source, n in sorted(sources[side].items())))
    redacted = dataset.manifest["redacted"]
    typer.echo("redacted: " + (", ".join(f"{n} {kind}" for kind, n in sorted(redacted.items())) or "nothing"))
    for why, n in sorted(skipped.items()):
        typer.echo(f"  approved but not an example: {n} ({why})")
