"""What a search finds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    """One knowledge item a search found, with the best similarity among its texts."""

    item_id: str
    kind: str  # "faq" | "passage" | "out_of_scope"
    title: str
    body: str
    file: str
    line: int
    score: float  # cosine similarity in [-1, 1]
    handoff: bool = False  # the item is marked for a person: its answer hands the conversation over
    action: str | None = None  # the business action an FAQ entry runs
