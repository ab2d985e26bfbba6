"""Base model against tuned adapter on the held-out examples, side by side, in one run.

For each held-out example the model writes its reply to the example's prompt (greedy, as served; up to the
target's length and 32 tokens more, so that no reply loses its citation to a fixed cut-off), and:
- **cited**: where the target answers from passages, the reply cites at least one passage it was given
  and none it was not (`[n]` with n within the numbered context);
- **supported**: the cited passages contain at least `support.SUPPORTED` of the reply's content words
  (`serving.training.support`: word overlap; it cannot see a negation);
- **declined when expected**: where the target is the decline, the reply cites nothing and says what the
  decline says (the same overlap with the decline text);
- length (characters) and latency per reply.

An adapter is marked better only when it is at least as good as the base on all three rates and better
on one; otherwise the report says it is not, whatever the loss did.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.training.dataset import Example
from serving.training.support import SUPPORTED, overlap

_PASSAGE = re.compile(r"^\[(\d+)\] .*\(source: [^)]*\)$", re.MULTILINE)
_CITATION = re.compile(r"\[(\d{1,3})\]")
RATES = ("cited_rate", "supported_rate", "declined_when_expected")
REPLY_SLACK = 32  # tokens beyond the target's length
MAX_REPLY_TOKENS = 512


@dataclass(frozen=True)
class Scored:
    cited: bool | None  # None: the example does not ask for an answer from passages
    supported: bool | None
    declined: bool | None  # None: no decline expected
    length: int
    latency_ms: float


def passages_of(prompt: str) -> dict[int, str]:
    """The numbered passages in an answer prompt's context, by number."""
    context = prompt.split("<context>", 1)[1].split("</context>", 1)[0] if "<context>" in prompt else ""
    marks = list(_PASSAGE.finditer(context))
    return {
        int(mark.group(1)): context[mark.start() : marks[i + 1].start() if i + 1 < len(marks) else len(context)]
        for i, mark in enumerate(marks)
    }


def score(messages: Sequence[dict[str, str]], reply: str, latency_ms: float) -> Scored:
    target = messages[-1]["content"]
    passages = passages_of(messages[-2]["content"])
    numbers = [int(n) for n in _CITATION.findall(reply)]
    cites_well = bool(numbers) and all(n in passages for n in numbers)
    text = _CITATION.sub("", reply).strip()
    wants_citation = bool(_CITATION.search(target)) and bool(passages)
    cited = supported = declined = None
    if wants_citation:
        cited = cites_well
        cited_text = "\n".join(passages[n] for n in set(numbers) if n in passages)
        supported = cites_well and overlap(text, cited_text) >= SUPPORTED
    elif passages:  # an answer prompt whose target cites nothing: the decline
        declined = not numbers and overlap(text, target) >= SUPPORTED
    return Scored(cited, supported, declined, len(text), latency_ms)


def figures(scored: Sequence[Scored]) -> dict[str, Any]:
    def rate(values: list[bool | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(sum(kept) / len(kept), 4) if kept else None

    return {
        "n": len(scored),
        "cited_rate": rate([s.cited for s in scored]),
        "supported_rate": rate([s.supported for s in scored]),
        "declined_when_expected": rate([s.declined for s in scored]),
        "mean_length_chars": round(statistics.fmean(s.length for s in scored), 1) if scored else 0.0,
        "latency_ms_p50": round(statistics.median(s.latency_ms for s in scored), 1) if scored else 0.0,
    }


def better(base: dict[str, Any], tuned: dict[str, Any]) -> bool:
    """At least as good on every rate both sides have, and better on one."""
    pairs = [(base[k], tuned[k]) for k in RATES if base.get(k) is not None and tuned.get(k) is not None]
    return bool(pairs) and all(t >= b for b, t in pairs) and any(t > b for b, t in pairs)


def reply_budget(tokenizer: Any, target: str, slack: int = REPLY_SLACK) -> int:
    """New tokens a reply may take: the target's length and some slack (a cut-off reply loses its citation)."""
    return min(MAX_REPLY_TOKENS, len(tokenizer(target)["input_ids"]) + slack)


def generate_all(model: Any, tokenizer: Any, examples: Sequence[Sequence[dict[str, str]]]) -> list[Scored]:
    import torch

    scored = []
    for messages in examples:
        prompt = tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)  # fmt: skip
        prompt = {key: value.to(model.device) for key, value in prompt.items()}
        budget = reply_budget(tokenizer, messages[-1]["content"])
        started = time.perf_counter()
        with torch.no_grad():
            output = model.generate(**prompt, max_new_tokens=budget, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
        latency = (time.perf_counter() - started) * 1000
        reply = tokenizer.decode(output[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        scored.append(score(messages, str(reply), latency))
    return scored


def compare(base: Path, adapter: Path, examples: Sequence[Sequence[dict[str, str]]]) -> dict[str, Any]:
    """`{"base": {...}, "tuned": {...}, "held_out": N, "better": bool}` over `examples`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    import torch

    model: Any = AutoModelForCausalLM.from_pretrained(str(base))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    base_figures = figures(generate_all(model, tokenizer, examples))
    tuned_model: Any = PeftModel.from_pretrained(model, str(adapter))
    tuned_model.eval()
    tuned_figures = figures(generate_all(tuned_model, tokenizer, examples))
    return {"base": base_figures, "tuned": tuned_figures, "held_out": len(examples),
            "better": better(base_figures, tuned_figures)}  # fmt: skip


def spread(examples: Sequence[Example], n: int) -> list[Example]:
    """Up to `n` examples taken in turn from each source (answers, declines, clarify...), each in file order."""
    by_source: dict[str, list[Example]] = {}
    for example in examples:
        by_source.setdefault(example.source, []).append(example)
    queues = [list(reversed(rows)) for _, rows in sorted(by_source.items())]
    picked: list[Example] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def table(report: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.1%}" if isinstance(value, float) and value <= 1 else str(value)

    rows = [f"{'':28s}{'base':>10s}{'tuned':>10s}"]
    for key in (*RATES, "mean_length_chars", "latency_ms_p50"):
        rows.append(f"{key:28s}{cell(report['base'][key]):>10s}{cell(report['tuned'][key]):>10s}")
    verdict = "better" if report["better"] else "NOT better (not marked as an improvement)"
    rows.append(f"held-out examples: {report['held_out']}; the adapter is {verdict}")
    return "\n".join(rows)
