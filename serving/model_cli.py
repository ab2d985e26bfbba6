"""`bot model …`: the dialogue model's side (serving it with vLLM, building its fine-tuning set)."""

from __future__ import annotations

import json
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


@model_app.command("train")
def model_train(
    base: Annotated[Path, typer.Option("--base", help="The base model: a folder, or a .gguf file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the adapter; run again to resume.")],
    config: ConfigOption = Path("config.yml"),
    dataset: Annotated[
        Path | None, typer.Option(help="A folder from `bot model dataset` (default: build one into OUT/dataset).")
    ] = None,
    steps: Annotated[int, typer.Option(min=1)] = 200,
    learning_rate: Annotated[float, typer.Option(min=0)] = 2e-4,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    max_tokens: Annotated[int, typer.Option(min=16, help="Longer examples are left out.")] = 1024,
    held_out: Annotated[float, typer.Option(min=0.05, max=0.9, help="When building the dataset.")] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint every this many steps (to resume).")] = 25,
    report_examples: Annotated[
        int, typer.Option(min=0, help="Held-out examples for the base-vs-tuned report (0: no report).")
    ] = 50,
) -> None:
    """Train a LoRA adapter for the dialogue model on the dataset (progress, resumable)."""
    from serving.training.dataset import read_examples
    from serving.training.train import TrainOptions, train

    setup_logging("warning")
    if not base.exists():
        typer.echo(f"--base {base}: no such folder or file", err=True)
        raise typer.Exit(2)
    if dataset is None:
        dataset = out / "dataset"
        if not (dataset / "train.jsonl").is_file():
            model_dataset(out=dataset, config=config, knowledge=None, held_out=held_out, seed=seed)
    try:
        examples = [example.messages for example in read_examples(dataset / "train.jsonl")]
        held_out_examples = read_examples(dataset / "held_out.jsonl") if report_examples else []
    except (OSError, ValueError) as err:
        typer.echo(f"cannot read the dataset: {err}", err=True)
        raise typer.Exit(2) from err
    options = TrainOptions(base=base, out=out, steps=steps, learning_rate=learning_rate, rank=rank,
                           batch_size=batch_size, max_tokens=max_tokens, seed=seed, threads=threads,
                           save_every=save_every)  # fmt: skip
    typer.echo(f"training a rank-{rank} LoRA adapter on {len(examples)} examples for {steps} steps", err=True)
    result = train(options, examples, lambda line: typer.echo(line, err=True))
    left_out = f" ({result.too_long} longer than {max_tokens} tokens left out)" if result.too_long else ""
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.3f}"
    typer.echo(f"adapter: {result.adapter} after {result.steps} steps in {result.seconds:.0f}s, final loss {loss}; "
               f"{result.examples} examples{left_out}")  # fmt: skip
    if report_examples:
        from serving.training.report import compare, spread, table

        held = [example.messages for example in spread(held_out_examples, report_examples)]
        typer.echo(f"comparing base and tuned on {len(held)} held-out examples ...", err=True)
        report = compare(result.base, result.adapter, held)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(table(report))
        typer.echo(f"report: {out / 'report.json'}")
