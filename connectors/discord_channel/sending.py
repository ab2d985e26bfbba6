"""Posting a reply on Discord: its pieces in order, its suggestions as buttons, failures logged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import discord

from bot.pipeline import Exchange
from connectors.discord_channel.client import SuggestionButton
from connectors.discord_channel.render import MAX_BUTTONS, NO_MENTIONS, reply_pieces

log = logging.getLogger(__name__)


def build_view(exchange: Exchange) -> discord.ui.View | None:
    """Suggestions as buttons, or None when there are none."""
    suggestions = [(i, s) for i, s in enumerate(exchange.reply.quick_replies) if s.strip()][:MAX_BUTTONS]
    if not suggestions:
        return None
    # timeout=None: a timed-out view would unregister the SuggestionButton template for every message.
    view = discord.ui.View(timeout=None)
    for index, text in suggestions:
        view.add_item(SuggestionButton(exchange.bot_turn_id, index, text))
    return view


@contextlib.contextmanager
def failures_logged(client: discord.Client, what: str) -> Iterator[None]:
    """A request to Discord that fails is logged and given up; what it was for stays in the store."""
    try:
        yield
    except discord.HTTPException as err:
        log.warning("discord: %s failed (HTTP %s): %s", what, err.status, err.text)
    except (aiohttp.ClientError, OSError) as err:
        log.warning("discord: %s failed: %r", what, err)
    except RuntimeError as err:
        if not client.is_closed():  # only aiohttp's "Session is closed" (at shutdown) is expected
            raise
        log.warning("discord: %s failed: the connection is closed (%s)", what, err)


async def post(
    client: discord.Client,
    channel: discord.abc.Messageable,
    exchange: Exchange,
    reference: discord.MessageReference | None,
) -> bool:
    """Post the reply's pieces in order; False when one could not be posted (the rest is not sent)."""
    pieces = reply_pieces(exchange.reply)
    view = build_view(exchange)
    for index, piece in enumerate(pieces):
        options: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if index == 0 and reference is not None:
            options["reference"] = reference
        if index == len(pieces) - 1 and view is not None:
            options["view"] = view  # buttons under the last piece, where the reader is
        sent = False
        with failures_logged(client, f"sending a reply in channel {getattr(channel, 'id', '?')}"):
            await channel.send(piece, **options)
            sent = True
        if not sent:
            return False  # the rest would read out of place without the piece that failed
    return True
