"""A tiny dialogue model built on the spot, for tests and benchmarks that need a real OpenAI-compatible server.

Random-weight Llama (2 layers, hidden size 64) with a byte-level BPE tokenizer trained here and a ChatML
chat template, trained on prompts shaped like the bot's real requests (real knowledge items as context,
the real prompt templates) so that its behaviour is known exactly (never its eloquence):

- a customer message containing "zebra" gets UNCITED_ANSWER (no citation marker);
- any other customer message gets CITED_ANSWER, which cites passage [1], however long the conversation;
- the one-off tasks get their own replies: CLARIFY_ANSWER, HANDOFF_ANSWER and SUMMARY_ANSWER.

The behaviour is verified, not hoped for. Training runs in rounds; after each one, every prompt shape the
bot sends (SHAPES) is checked on prompts the model never trained on, built from held-out questions with
their own random draw: teacher-forced over the expected reply and its end-of-sequence token, the expected
token must lead every other by MARGIN logits at every position. Then greedy decoding gives exactly that
reply, and no difference in floating-point kernels between CPUs (or between this process and the model
server) can tip it, since they move logits by far less. Training stops at the first round where every shape
passes; if that has not happened within `max_steps`, the build fails naming the shapes that did not pass.
The same seed gives different trajectories on different CPUs; the check is what makes them all equivalent.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.tiny_prompts import (
    CHECK_QUESTIONS,
    CITED_ANSWER,
    CLARIFY_ANSWER,
    HANDOFF_ANSWER,
    SHAPES,
    SUMMARY_ANSWER,
    TRIGGER,
    UNCITED_ANSWER,
    Prompts,
    label,
)

__all__ = ["CITED_ANSWER", "CLARIFY_ANSWER", "HANDOFF_ANSWER", "SHAPES", "SUMMARY_ANSWER", "TRIGGER", "UNCITED_ANSWER",
           "BuildReport", "TinyModelError", "build_tiny_model"]  # fmt: skip

MARGIN = 3.0  # logits by which the expected token must lead at every position of every check prompt
CHECKS_PER_SHAPE = 16
ROUND_STEPS = 100
MAX_STEPS = 3000
BATCH = 4
LEARNING_RATE = 3e-3
LR_DECAY = 0.8  # per round
LR_FLOOR = 0.25
FAILING_WEIGHT = 3  # a shape that failed its last check is drawn this many times as often
HIDDEN = 64

SPECIALS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TinyModelError(RuntimeError):
    """The model did not learn every prompt shape within its step budget."""


@dataclass(frozen=True)
class ShapeResult:
    shape: str
    prompts: int
    passed: int
    worst_margin: float  # the smallest lead of the expected token, over every position of every prompt
    worst_prompt: str  # what the customer wrote in that prompt (or how its task begins)


@dataclass(frozen=True)
class BuildReport:
    seed: int
    steps: int
    seconds: float
    margin: float
    shapes: tuple[ShapeResult, ...]

    @property
    def passed(self) -> bool:
        return all(s.passed == s.prompts for s in self.shapes)

    def failing(self) -> list[ShapeResult]:
        return [s for s in self.shapes if s.passed < s.prompts]


class _Encoder:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def example(self, chat: list[dict[str, str]], reply: str) -> tuple[list[int], list[int]]:
        """Prompt ids and reply ids (ending with the end-of-sequence token)."""
        # A list of ids, or an encoding holding them, depending on the transformers version.
        encoded: Any = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        prompt: list[int] = list(encoded if isinstance(encoded, list) else encoded["input_ids"])
        answer: list[int] = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        return prompt, [*answer, self.tokenizer.eos_token_id]


def _batch(examples: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Right-padded ids, attention mask and labels (the reply only)."""
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    for row, (prompt, answer) in enumerate(examples):
        sequence = torch.tensor(prompt + answer)
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = torch.tensor(answer)
    return ids, mask, labels


def _reply_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Cross-entropy over the reply tokens only: the head runs on those positions alone, not the whole prompt."""
    import torch.nn.functional as F

    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    chosen = targets != -100
    return F.cross_entropy(model.lm_head(hidden[chosen]), targets[chosen])


def reply_margins(model: Any, examples: Sequence[tuple[list[int], list[int]]]) -> list[float]:
    """For each (prompt, reply): the smallest lead of the reply's token over the best other, teacher-forced."""
    import torch

    margins = []
    with torch.no_grad():
        for prompt, answer in examples:
            ids = torch.tensor([prompt + answer])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) + len(answer) - 1]
            target = torch.tensor(answer)
            expected = logits[torch.arange(len(answer)), target]
            others = logits.clone()
            others[torch.arange(len(answer)), target] = float("-inf")
            margins.append(float((expected - others.max(dim=1).values).min()))
    return margins


def build_tiny_model(
    out: Path,
    knowledge: Path,
    prompts: Path,
    seed: int = 0,
    max_steps: int = MAX_STEPS,
    margin: float = MARGIN,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Train until every shape passes its check by `margin`; save the model, tokenizer and `checks.json` in `out`.

    Raises TinyModelError, naming each shape that has not passed, when `max_steps` did not suffice.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    torch.manual_seed(seed)
    train_rng, check_rng = random.Random(seed), random.Random("checks")
    maker = Prompts(knowledge, prompts)
    tokenizer = _tokenizer(maker.corpus(knowledge, prompts))
    encoder = _Encoder(tokenizer)
    checks: dict[str, list[tuple[str, tuple[list[int], list[int]]]]] = {}
    for shape in SHAPES:
        chats = [maker.chat(shape, CHECK_QUESTIONS, check_rng) for _ in range(CHECKS_PER_SHAPE)]
        checks[shape.name] = [(label(chat), encoder.example(chat, shape.reply)) for chat in chats]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    weights = [shape.weight for shape in SHAPES]
    steps = 0
    while True:
        # Lower with every round, so that the model settles where the checks look rather than swinging past.
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * max(LR_FLOOR, LR_DECAY ** (steps // ROUND_STEPS))
        model.train()
        for _ in range(ROUND_STEPS):
            drawn = train_rng.choices(SHAPES, weights, k=BATCH)
            batch = [encoder.example(maker.chat(s, maker.train_questions, train_rng), s.reply) for s in drawn]
            _reply_loss(model, *_batch(batch, tokenizer.pad_token_id)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        steps += ROUND_STEPS
        model.eval()  # type: ignore[no-untyped-call]
        report = BuildReport(seed, steps, time.monotonic() - started, margin, _check(model, checks, margin))
        if progress is not None:
            worst = min(report.shapes, key=lambda s: s.worst_margin)
            progress(f"step {steps}: {sum(s.passed for s in report.shapes)}/{sum(s.prompts for s in report.shapes)}"
                     f" checks pass; weakest: {worst.shape} ({worst.worst_margin:.2f})")  # fmt: skip
        if report.passed:
            break
        # Train more on what is not learnt yet.
        unlearnt = {s.shape for s in report.failing()}
        weights = [shape.weight * (FAILING_WEIGHT if shape.name in unlearnt else 1) for shape in SHAPES]
        if steps >= max_steps:
            failing = "; ".join(
                f"{s.shape} ({s.passed}/{s.prompts} pass, worst margin {s.worst_margin:.2f} on {s.worst_prompt!r})"
                for s in report.failing()
            )
            raise TinyModelError(
                f"tiny model (seed {seed}) did not learn every prompt shape in {steps} steps, "
                f"margin {margin}: {failing}"
            )
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_new_tokens=32,
        do_sample=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "checks.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return report


def _check(
    model: Any, checks: dict[str, list[tuple[str, tuple[list[int], list[int]]]]], margin: float
) -> tuple[ShapeResult, ...]:
    results = []
    for name, cases in checks.items():
        margins = reply_margins(model, [example for _, example in cases])
        passed = sum(m >= margin for m in margins)
        worst = min(range(len(margins)), key=margins.__getitem__)
        results.append(ShapeResult(name, len(margins), passed, round(margins[worst], 3), cases[worst][0]))
    return tuple(results)


def _tokenizer(corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
