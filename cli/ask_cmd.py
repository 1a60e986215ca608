"""`localllm ask "..."`: one question, answer streamed to the terminal.

Uses the running daemon when there is one (waiting for it if it is still
starting); otherwise runs the same runtime and pipeline in this process, so a
first-time user gets an answer with no daemon.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from localllm.config import Settings
from localllm.daemon.http import openai_responses as shapes
from localllm.daemon.http.server import build_registry
from localllm.daemon.http.tokens import resolve_api_token
from localllm.daemon.pipeline.runtime import running
from localllm.daemon.requests import ChatCompletionRequest, parse_request
from localllm.errors import DaemonUnreachable
from localllm.vocabulary import AnswerText

from .context import load_cli_settings, user_errors
from .daemon_client import DaemonClient

# How long `ask` waits for a daemon that is still starting before giving up on it.
STARTING_DAEMON_WAIT_S = 120.0


@click.command()
@click.argument("prompt", nargs=-1)
@click.option("-m", "--model", help="Model to ask (default: engine.model).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer in tokens.")
@click.option("-t", "--temperature", type=click.FloatRange(0, 2), help="Sampling temperature (0 = greedy).")
@click.option("--seed", type=int, help="Sampling seed, for repeatable answers.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole OpenAI-shaped response as JSON.")
@click.option("--local", "in_process", is_flag=True, help="Do not use a running daemon; answer in this process.")
@user_errors
def ask_command(prompt, model, system, max_tokens, temperature, seed, as_json, in_process) -> None:
    """Ask the model PROMPT (or read it from stdin when piped) and stream the answer."""
    text = " ".join(prompt).strip()
    if not text or text == "-":
        if sys.stdin.isatty():
            raise click.UsageError('Give a prompt: localllm ask "your question" (or pipe it on stdin).')
        text = sys.stdin.read().strip()
    if not text:
        raise click.UsageError("The prompt is empty.")
    settings = load_cli_settings({"engine.model": model}).settings
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    body = {"model": settings.engine.model, "messages": messages}
    for key, value in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)):
        if value is not None:
            body[key] = value
    asyncio.run(_ask(settings, body, as_json=as_json, in_process=in_process))


async def _ask(settings: Settings, body: dict, *, as_json: bool, in_process: bool) -> None:
    if not in_process:
        client = DaemonClient(settings, await asyncio.to_thread(resolve_api_token, settings))
        if await _daemon_ready(client):
            if as_json:
                _print_json(await client.chat(body))
            else:
                async for chunk in client.stream_chat(body):
                    for choice in chunk.get("choices", []):
                        _write(choice.get("delta", {}).get("content") or "")
                _write("\n")
            return
    await _ask_in_process(settings, body, as_json=as_json)


async def _daemon_ready(client: DaemonClient) -> bool:
    """Whether a daemon answers; one that is still starting is waited for."""
    health = await client.health()
    deadline = time.monotonic() + STARTING_DAEMON_WAIT_S
    while health is not None and health.get("status") in ("starting", "loading"):
        if time.monotonic() > deadline:
            raise DaemonUnreachable(f"The daemon at {client.base_url} is still starting after "
                                    f"{STARTING_DAEMON_WAIT_S:.0f} s; see `localllm status`, or use --local.")
        await asyncio.sleep(0.25)
        health = await client.health()
    return health is not None


async def _ask_in_process(settings: Settings, body: dict, *, as_json: bool) -> None:
    request = parse_request(ChatCompletionRequest, body)
    # One question, one sequence: no KV cache for parallel requests that will never come.
    settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"n_parallel": 1})})
    registry = await asyncio.to_thread(build_registry, settings, [settings.engine.model], with_preload=False)
    registry.start_all()
    try:
        # The same runtime and pipeline as the daemon: guard, router, policy and upstreams included.
        async with running(settings, registry, one_shot=True) as runtime:
            await registry.default.wait_ready()
            gen = await runtime.pipeline.chat(request)
            answer = AnswerText()
            async for event in gen.events:
                piece = answer.add(event)
                if piece and not as_json:
                    _write(piece)
            if as_json:
                _print_json(shapes.chat_completion(gen, answer))
            else:
                _write("\n")
    finally:
        await registry.stop_all()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_json(payload: dict) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
