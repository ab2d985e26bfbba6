"""Out-of-scope names: which mentions of another company decline a message, and which are only context."""

from __future__ import annotations

import pytest

from bot.knowledge.names import NameTable, name_words

TABLE = NameTable.build(
    [("other-shops", ["Acme Mart", "Bolt.com", "O'Hara"]), ("apps", ["StreamCo", "Acme Mart"])],
    known_texts=["We ship with Parcelly.", "Price match: if BigBox sells it for less, tell us."],
)


def test_words_ignore_case_punctuation_and_possessives() -> None:
    assert name_words("Acme-Mart’s  RETURNS!") == ("acme", "mart", "returns")
    assert name_words("bolt.com") == ("bolt", "com")


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("where is my acme mart parcel", "other-shops"),
        ("ACME MART's refund policy?", "other-shops"),  # possessive, any case
        ("Acme Marts near me", "other-shops"),  # a plural
        ("my bolt.com order never came", "other-shops"),
        ("o'hara account locked", "other-shops"),
        ("how do i cancel my streamco subscription", "apps"),
        ("StreamCo charged me twice", "apps"),  # the first word
    ],
)
def test_a_message_asking_about_a_listed_name_is_matched(text: str, group: str) -> None:
    match = TABLE.find(text)
    assert match is not None and match.group == group


@pytest.mark.parametrize(
    "text",
    [
        "where is my parcel",
        "acme is not a name here, nor is mart",  # both words, but not together
        "my acmemart order",  # not the whole word
        "it is cheaper on acme mart, can you match it?",  # where the customer saw a price
        "bought a used jacket of yours off Bolt.com, is the warranty still valid",
        "I paid via StreamCo",
        "can I post my return with StreamCo instead",
    ],
)
def test_a_message_that_does_not_name_one_or_names_it_as_context_is_not_matched(text: str) -> None:
    assert TABLE.find(text) is None


def test_a_name_listed_twice_keeps_its_first_group() -> None:
    match = TABLE.find("acme mart login")
    assert match is not None and (match.group, match.name) == ("other-shops", "Acme Mart")


def test_a_name_the_knowledge_mentions_is_ignored_and_reported() -> None:
    table = NameTable.build([("other-shops", ["Parcelly", "BigBox", "Acme Mart"])], ["We ship with Parcelly."])
    assert table.find("my parcelly tracking is stuck") is None
    assert [i.name for i in table.ignored] == ["Parcelly"] and len(table) == 2
    assert TABLE.find("my bigbox order") is None and TABLE.ignored == ()  # never listed there
