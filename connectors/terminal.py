"""A conversation in the terminal: lines from stdin, replies (with citations) to stdout."""

from __future__ import annotations

import secrets
from typing import TextIO

import anyio.to_thread

from bot.pipeline import Pipeline
from bot.types import Message, Reply

CHANNEL = "terminal"
QUIT_WORDS = {"/quit", "/exit"}


def render(reply: Reply) -> str:
    """Plain text: the answer, then numbered sources and suggestions."""
    lines = [reply.text]
    for number, citation in enumerate(reply.citations, start=1):
        lines.append(f"  [{number}] {citation.title} ({citation.source}:{citation.line})")
    if reply.quick_replies:
        lines.append("  Suggestions: " + " | ".join(reply.quick_replies))
    if reply.handoff:
        lines.append("  (handed over to a person)")
    return "\n".join(lines)


async def run_terminal_chat(pipeline: Pipeline, stdin: TextIO, stdout: TextIO, user: str = "local") -> int:
    """Chat until end of input or /quit. Returns the number of messages answered."""
    conversation_id = secrets.token_urlsafe(18)
    interactive = stdin.isatty()
    answered = 0
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = await anyio.to_thread.run_sync(stdin.readline)
        if not line:
            break
        text = line.rstrip("\n")
        if text.strip() in QUIT_WORDS:
            break
        reply = await pipeline.handle(Message(conversation_id, CHANNEL, user, text))
        stdout.write("bot> " + render(reply) + "\n")
        stdout.flush()
        answered += 1
    return answered
