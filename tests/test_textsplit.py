from __future__ import annotations

import pytest

from connectors.splitting import split_message


def test_short_text_is_one_piece() -> None:
    assert split_message("hello", 10) == ["hello"]


def test_cuts_at_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph here.\n\nSecond one. It has two sentences."
    assert split_message(text, 30) == ["First paragraph here.", "Second one.", "It has two sentences."]
    assert split_message("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]


def test_unbreakable_text_is_cut_hard_and_nothing_is_lost() -> None:
    text = "x" * 25
    assert split_message(text, 10) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize("limit", [12, 50, 4096])
def test_every_piece_fits_and_words_survive(limit: int) -> None:
    text = " ".join(f"word{i}." for i in range(2000))
    pieces = split_message(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    assert " ".join(pieces).split() == text.split()
