"""`localllm serve`: run the daemon in the foreground."""

from __future__ import annotations

import asyncio
import logging

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.daemon.http.server import serve


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1). Non-loopback needs an API token.")
@click.option("--port", type=int, help="TCP port (default 8765).")
@click.option("--model", help="Model to serve: catalog name or a .gguf file in the models dir.")
@click.option("--n-ctx", type=int, help="Context window in tokens.")
@click.option("--threads", "n_threads", type=int, help="CPU threads (default: physical cores).")
@click.option("--gpu-layers", "n_gpu_layers", help="Layers on the GPU: 0, N or all (needs a GPU build).")
@user_errors
def serve_command(host, port, model, n_ctx, n_threads, n_gpu_layers) -> None:
    """Serve the OpenAI-compatible API on localhost until stopped (Ctrl-C / SIGTERM)."""
    loaded = load_cli_settings({"server.host": host, "server.port": port, "engine.model": model,
                                "engine.n_ctx": n_ctx, "engine.n_threads": n_threads,
                                "engine.n_gpu_layers": n_gpu_layers})
    settings = loaded.settings
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("localllm").setLevel(logging.INFO)
    click.echo(f"localllm: serving {settings.engine.model} on http://{settings.server.host}:{settings.server.port}",
               err=True)
    asyncio.run(serve(settings, [settings.engine.model]))
