"""/ask and clicks on suggestion buttons: interactions, answered as follow-ups after "thinking…"."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable

import discord

from bot.pipeline import Pipeline
from connectors.discord_channel.inbound import Inbound
from connectors.discord_channel.render import NO_MENTIONS, reply_pieces
from connectors.discord_channel.sending import build_view, failures_logged
from connectors.inflight import InFlight

RECENT_INTERACTIONS = 1000  # interaction ids remembered to recognise a redelivery at once


class Interactions:
    def __init__(
        self, pipeline: Callable[[], Pipeline], client: discord.Client, inbound: Inbound, in_flight: InFlight
    ) -> None:
        self._pipeline = pipeline
        self._client = client
        self._inbound = inbound
        self._in_flight = in_flight
        self._recent: OrderedDict[int, None] = OrderedDict()

    async def ask(self, interaction: discord.Interaction, question: str) -> None:
        await self._answer(interaction, question)

    async def suggestion(self, interaction: discord.Interaction, turn_id: int, index: int, label: str) -> None:
        # A label may be cut at 80 characters; the full suggestion is read from the stored reply.
        await self._answer(interaction, label.removesuffix("…"), suggestion=(turn_id, index))

    async def _answer(
        self, interaction: discord.Interaction, text: str, suggestion: tuple[int, int] | None = None
    ) -> None:
        """Answer /ask (`text`) or a click on the suggestion at (bot turn id, index) (`text`: its label)."""
        if not self._inbound.interaction_allowed(interaction):
            # Only the person who asked sees this; nothing is stored for a channel the bot does not serve.
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message(
                    "I only answer in direct messages and in the support channels.", ephemeral=True
                )
            return
        if self._redelivered(interaction.id):
            return
        with self._in_flight.this_task() as accepted:
            if accepted:
                await self._answer_new(interaction, text, suggestion)

    def _redelivered(self, interaction_id: int) -> bool:
        """Whether this interaction arrived before (a gateway replay); remembers it otherwise."""
        if interaction_id in self._recent:
            return True
        self._recent[interaction_id] = None
        if len(self._recent) > RECENT_INTERACTIONS:
            self._recent.popitem(last=False)
        return False

    async def _answer_new(
        self, interaction: discord.Interaction, text: str, suggestion: tuple[int, int] | None
    ) -> None:
        # Discord wants a first response within 3 seconds, and the answer may wait behind an earlier one in
        # the same conversation: "thinking…" (the interaction's typing indicator) goes out alongside, not
        # after. The message is handed to the pipeline at once all the same, so it keeps its place in line.
        acknowledging = asyncio.create_task(self._acknowledge(interaction))
        pipeline = self._pipeline()
        try:
            if suggestion is not None:
                # Looked up in this conversation only: a button's id can be crafted.
                conversation = self._inbound.interaction_message(interaction, text).conversation_id
                text = await pipeline.store.suggestion(*suggestion, conversation) or text
            exchange = await pipeline.exchange(self._inbound.interaction_message(interaction, text))
        finally:
            deferred = await acknowledging  # follow-ups need the acknowledgement
        if not await pipeline.claim_delivery(exchange):
            # Answered and sent before (by an earlier run of the bot): take back only this run's "thinking…".
            if deferred:
                with failures_logged(self._client, f"withdrawing the acknowledgement of interaction {interaction.id}"):
                    await interaction.delete_original_response()
            return
        pieces = reply_pieces(exchange.reply, quote=text)
        view = build_view(exchange)
        sent = False
        with failures_logged(self._client, f"answering interaction {interaction.id}"):
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                await interaction.followup.send(
                    piece,
                    allowed_mentions=NO_MENTIONS,
                    view=view if last and view is not None else discord.utils.MISSING,
                )
            sent = True
        await pipeline.delivered(exchange, sent)

    async def _acknowledge(self, interaction: discord.Interaction) -> bool:
        """Show "thinking…" for the interaction; False when Discord did not take it (expired, already taken)."""
        with failures_logged(self._client, f"acknowledging interaction {interaction.id}"):
            await interaction.response.defer(thinking=True)
            return True
        return False
