"""`bot model …`: the dialogue model's side (serving it with vLLM, building its fine-tuning set)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from serving.cli_support import ConfigOption, load_settings, setup_logging

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
