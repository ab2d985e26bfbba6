"""Splitting a long reply into channel-sized messages at the most natural boundary available."""

from __future__ import annotations

import re

_BOUNDARIES = ("\n\n", "\n", r"(?<=[.!?])\s+", r"\s+")


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraphs, then lines, sentences, words, characters."""
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _best_cut(rest, limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _best_cut(text: str, limit: int) -> int:
    window = text[: limit + 1]
    for boundary in _BOUNDARIES:
        pattern = re.escape(boundary) if not boundary.startswith(("(", "\\")) else boundary
        ends = [m.start() for m in re.finditer(pattern, window) if 0 < m.start() <= limit]
        # Accept a boundary only if it keeps the piece reasonably full (no one-word messages).
        if ends and ends[-1] >= limit // 3:
            return ends[-1]
    return limit
