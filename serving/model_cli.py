"""`bot model …`: the dialogue model's side (serving it with vLLM, building its fine-tuning set)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from serving.cli_support import (
    ConfigOption,
    KnowledgeOption,
    load_settings,
    operator_errors,
    setup_logging,
    synced_engine,
)

if TYPE_CHECKING:
    from bot.config import ModelServerSettings
    from serving.model_server import ModelServerProcess

model_app = typer.Typer(help="The dialogue model: build its training data, train it, serve it (vLLM or transformers).",
                        no_args_is_help=True)  # fmt: skip


Backend = Literal["vllm", "transformers"]


@model_app.command("serve")
def model_serve(
    config: ConfigOption = Path("config.yml"),
    backend: Annotated[
        Backend | None, typer.Option(help="vllm (GPU hosts) or transformers (CPU); default: model_server.backend.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="transformers: which of model_server.lora_adapters to merge and serve.")
    ] = None,
) -> None:
    """Run the dialogue model's OpenAI-compatible server until Ctrl-C: vLLM with every adapter, or
    `transformers serve` with the base merged with one adapter (no GPU needed)."""
    from serving.model_server import ModelServerError, serve_until_stopped

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
    chosen = backend or server.backend
    if chosen == "vllm":
        process, name = _vllm_process(server), server.served_model_name or server.model
    else:
        process, name = _transformers_process(server, adapter)

    def announce() -> None:
        typer.echo(f"\nModel server ready. Point the bot at it in {config}:\n", err=True)
        typer.echo(f"  llm: {{base_url: {process.url}/v1, model: {name}}}\n", err=True)
        if chosen == "vllm" and server.lora_adapters:
            typer.echo(f"  LoRA adapters, served as models of their own: {', '.join(server.lora_adapters)}\n", err=True)

    try:
        code = serve_until_stopped(process, announce)
    except ModelServerError as err:
        typer.echo(f"model server failed: {err}", err=True)
        raise typer.Exit(1) from err
    if code is not None:
        typer.echo(f"the model server exited by itself with code {code}", err=True)
        raise typer.Exit(1)


def _vllm_process(server: ModelServerSettings) -> ModelServerProcess:
    from serving.model_server import ModelServerProcess, VllmNotInstalledError, vllm_executable

    try:
        executable = vllm_executable()
    except VllmNotInstalledError as err:
        typer.echo(f"{err} (without a GPU: `bot model serve --backend transformers`)", err=True)
        raise typer.Exit(2) from err
    return ModelServerProcess(server, executable, echo=sys.stderr)


def _transformers_process(server: ModelServerSettings, adapter: str | None) -> tuple[ModelServerProcess, str]:
    """`transformers serve` of one plain folder: the base merged with the chosen adapter, or the base alone;
    and the model name clients send, that folder (`transformers serve` answers only requests naming it)."""
    from bot.retrieval.onnx_encoder import default_cache_dir
    from serving.model_server import ModelServerProcess, transformers_command
    from serving.training.merge import AdapterError, merged_model, servable_base

    adapters = server.lora_adapters
    if adapter is not None and adapter not in adapters:
        known = ", ".join(adapters) or "none"
        typer.echo(f"--adapter {adapter}: not in model_server.lora_adapters (configured: {known})", err=True)
        raise typer.Exit(2)
    if adapter is None and len(adapters) > 1:
        typer.echo(f"the transformers backend serves one adapter: choose with --adapter ({', '.join(adapters)})",
                   err=True)  # fmt: skip
        raise typer.Exit(2)
    chosen = adapter or next(iter(adapters), None)
    cache = default_cache_dir() / "models"
    say = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        if chosen is None:
            folder = servable_base(Path(server.model), cache, say)
        else:
            folder = merged_model(adapters[chosen], Path(server.model), cache, say)
    except AdapterError as err:
        typer.echo(f"cannot serve with transformers: {err}", err=True)
        raise typer.Exit(2) from err
    folder = folder.resolve()
    process = ModelServerProcess(server, [], command=transformers_command(server, folder), environment={},
                                 name="transformers serve", echo=sys.stderr)  # fmt: skip
    return process, str(folder)


@model_app.command("load-adapter")
def model_load_adapter(
    name: Annotated[str, typer.Argument(help="The name requests will use as `model` (set llm.model to it).")],
    path: Annotated[Path, typer.Argument(help="The adapter folder (from `bot model train --out`).")],
    config: ConfigOption = Path("config.yml"),
    url: Annotated[
        str | None, typer.Option(help="The vLLM server (default: model_server's address, else llm.base_url).")
    ] = None,
    server_path: Annotated[
        str | None, typer.Option(help="The adapter's path as the server sees it, when it runs elsewhere.")
    ] = None,
    replace: Annotated[bool, typer.Option(help="Unload an adapter of the same name first (a new version).")] = False,
) -> None:
    """Load a LoRA adapter into a running vLLM server, without a restart."""
    from serving.lora_runtime import AdapterLoadError, RuntimeAdapters
    from serving.lora_runtime import server_path as adapter_path_on_server
    from serving.model_server import base_url
    from serving.training.merge import AdapterError, check_adapter

    try:
        check_adapter(path)
    except AdapterError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    settings = load_settings(config) if url is None or config.exists() else None  # --url needs no config file
    llm = settings.llm if settings is not None else None
    target = url or (base_url(settings.model_server) if settings and settings.model_server else None)
    target = target or (llm.base_url if llm else None)
    if target is None:
        typer.echo(f"{config}: no model server to load into: give --url, or a model_server: or llm: section", err=True)
        raise typer.Exit(2)
    api_key = os.environ.get(llm.api_key_env if llm else "SUPPORTBOT_LLM_API_KEY")
    try:
        with RuntimeAdapters(target, api_key) as server:
            answer = server.load(name, adapter_path_on_server(path, server_path), replace=replace)
    except AdapterLoadError as err:
        typer.echo(f"cannot load adapter {name!r}: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(answer)
    typer.echo(f"Requests naming model {name!r} now use it: set `llm.model: {name}` in {config} (live). "
               f"To keep it across restarts, add it to model_server.lora_adapters.")  # fmt: skip


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
    balance: Annotated[
        float, typer.Option(min=0, max=0.3, help="Repeat rarer sources (declines, clarify, handoff) up to this share.")
    ] = 0.1,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint every this many steps (to resume).")] = 25,
    report_examples: Annotated[
        int, typer.Option(min=0, help="Held-out examples for the base-vs-tuned report (0: no report).")
    ] = 50,
) -> None:
    """Train a LoRA adapter for the dialogue model on the dataset (progress, resumable)."""
    from serving.training.dataset import balanced, read_examples
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
        train_examples = read_examples(dataset / "train.jsonl")
        held_out_examples = read_examples(dataset / "held_out.jsonl") if report_examples else []
    except (OSError, ValueError) as err:
        typer.echo(f"cannot read the dataset: {err}", err=True)
        raise typer.Exit(2) from err
    examples = [example.messages for example in balanced(train_examples, balance)]
    options = TrainOptions(base=base, out=out, steps=steps, learning_rate=learning_rate, rank=rank,
                           batch_size=batch_size, max_tokens=max_tokens, seed=seed, threads=threads,
                           save_every=save_every)  # fmt: skip
    repeated = (
        f" ({len(examples) - len(train_examples)} repeats of rarer sources)"
        if len(examples) > len(train_examples)
        else ""
    )
    typer.echo(f"training a rank-{rank} LoRA adapter on {len(examples)} examples{repeated} for {steps} steps",
               err=True)  # fmt: skip
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
