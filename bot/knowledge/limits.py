"""How large knowledge may be: each text a customer is sent or the model reads, each file, the whole base.

Without limits one valid entry can make every ask of it store, send and split a reply of megabytes, and
one huge file can keep the index busy for as long as it likes. Something over a limit is reported with
its file and line (`bot kb check`, the service's log and /health) and not applied; its last good version
stays served. Nothing is ever cut short in silence.

The figures, and why (the demo knowledge base's largest values in brackets):

- An FAQ answer or out-of-scope reply: 12,000 characters [563]. It is sent as one reply: at most three
  Telegram messages (4,096 each), six on Discord (2,000). A care guide of a few pages fits; anything longer
  is a document to link to, not a chat answer.
- A policy section (a passage): 16,000 characters [824]. It is shown whole, at most four Telegram
  messages, and some 4,000 tokens of context for a model. Longer sections read better split with
  sub-headings. (Channels bound the messages of one reply whatever its length: connectors/.)
- A phrasing (question, alternate, out-of-scope example, a section's question, a heading, a name, a tag):
  1,000 characters [135]. The embedding model reads 256 word pieces, about 1,000 characters of English,
  and ignores the rest; customers' messages are capped at `answering.max_message_chars` (2,000).
- A file: 2,000,000 bytes [12,215]. Some 5,000 FAQ entries; every file is read again at each sync.
- The knowledge base: 12,000 texts to embed [1,616]: every question, alternate, out-of-scope example,
  passage, passage sentence and passage question is one, and so are an FAQ answer and each of its
  sentences (calibration embeds those to learn how answers are worded). Calibration
  (`bot.retrieval.ranking.calibration`) runs at every change and grows with the square of this count:
  measured at BANKING77's 10,080 texts it took 34-45 s and the whole `bot eval` process 1.0 GB
  (2026-12-02), so 12,000 takes about 1.4 times that and 50,000 some 25 times.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ANSWER_CHARS = 12_000
MAX_PASSAGE_CHARS = 16_000
MAX_PHRASING_CHARS = 1_000
MAX_FILE_BYTES = 2_000_000
MAX_TEXTS = 12_000  # BANKING77's 10,003 training phrasings and their answers fit


@dataclass(frozen=True)
class TextLimit:
    """The most characters one kind of text may have, and what to do about a longer one."""

    chars: int
    what: str  # "an answer"
    advice: str  # "shorten it, or split it into several entries"

    def problem(self, text: str) -> str | None:
        """Why `text` is too long, or None."""
        if len(text) <= self.chars:
            return None
        return f"{len(text):,} characters, more than the {self.chars:,} {self.what} may have: {self.advice}"


ANSWER = TextLimit(MAX_ANSWER_CHARS, "an answer", "shorten it, or split it into several entries")
REPLY = TextLimit(MAX_ANSWER_CHARS, "a reply", "shorten it")
PASSAGE = TextLimit(MAX_PASSAGE_CHARS, "a policy section", "split it with sub-headings")
PHRASING = TextLimit(MAX_PHRASING_CHARS, "a phrasing", "write it as a customer would ask it")
HEADING = TextLimit(MAX_PHRASING_CHARS, "a heading", "shorten it")
NAME = TextLimit(MAX_PHRASING_CHARS, "a name", "shorten it")
TAG = TextLimit(MAX_PHRASING_CHARS, "a tag", "shorten it")


def file_too_large(size: int, limit_line: int) -> str:
    """Why a file of `size` bytes is not read; `limit_line`: the line on which the limit falls."""
    return (
        f"the file is {size:,} bytes, more than the {MAX_FILE_BYTES:,} a knowledge file may have "
        f"(the limit falls on line {limit_line:,}): split it into several files"
    )


def too_many_texts(adds: int, before: int) -> str:
    """Why a file that would bring the knowledge base past MAX_TEXTS is not applied."""
    return (
        f"too many texts: this file's {adds:,} and the {before:,} of the files applied before it are more than "
        f"the {MAX_TEXTS:,} a knowledge base may have (each question, alternate, example, passage, answer, and "
        "sentence of a passage or answer is one): remove or merge entries"
    )
