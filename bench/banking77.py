#!/usr/bin/env python3
"""Benchmark answer selection on BANKING77 (77 online-banking intents) through `bot eval`.

Each intent becomes one FAQ entry (id = intent name, question = its first training example,
alternates = the setting's other training examples, a placeholder answer), written as one YAML
file per intent. The 3,080 test messages become the eval cases (expected = intent). `bot eval`
then runs as a subprocess per setting and seed, with its own small config in the work directory,
so nothing under the repository's .data/ index is touched.

Settings:
  full    every row of train.csv (10,003 examples)
  10shot  10 examples per intent, drawn with random.Random(seed) for seed in 0..--seeds-1
  oos     every row of train.csv for 67 intents; the other 10 (random.Random(77), fixed in advance)
          are never in the knowledge base and their test messages are expected `out_of_scope`.
          Reports out-of-scope recall, and in-scope accuracy against the closed-set figure (the same
          run's ranking with no abstention).

Usage:
  python bench/banking77.py [--data DIR] [--work DIR] [--settings full,10shot] [--seeds 1] [--bot PATH]

The data is read in place (default <repo>/../shared/datasets/banking77) and never copied into the
repository. No network: the subprocess runs with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1.
BANKING77: Casanueva et al. 2020, https://github.com/PolyAI-LDN/task-specific-datasets, CC BY 4.0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from banking77_data import (  # bench/banking77_data.py: the data set as a knowledge base and cases
    DEFAULT_DATA,
    OUT_OF_SCOPE,
    examples_for,
    faq_ids,
    held_out_intents,
    load_data,
    write_cases,
    write_knowledge,
)
from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)
from tuned import tuned_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / ".data" / "bench" / "banking77"
SETTINGS = ("full", "10shot", "oos")
FIGURES = (
    "n_cases",
    "top1_accuracy",
    "top3_accuracy",
    "clarified",
    "top1_or_clarified",
    "in_scope_accuracy",
    "oos_precision",
    "oos_recall",
    "latency_ms_p50",
    "latency_ms_p95",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="BANKING77 folder (train.csv, test.csv, categories.json)",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work directory (default: {DEFAULT_WORK})")
    parser.add_argument("--settings", default="full,10shot", help="comma-separated subset of: " + ",".join(SETTINGS))
    parser.add_argument("--seeds", type=int, default=1, help="10shot runs seeds 0..N-1 (default 1)")
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot", help="bot executable")
    parser.add_argument(
        "--encoder",
        choices=("onnx-int8", "onnx", "torch"),
        help="index.encoder for the run (default: the product's default)",
    )
    parser.add_argument(
        "--model",
        choices=("all-MiniLM-L6-v2", "all-mpnet-base-v2"),
        help="index.model for the run: the bundled encoder (default: the product's default)",
    )
    parser.add_argument(
        "--embedding-model",
        type=Path,
        help="index.embedding_model for the run: a sentence-transformers folder (default: the product's default)",
    )
    parser.add_argument(
        "--tune",
        type=int,
        metavar="THREADS",
        help="tune the encoder on each run's knowledge first (`bot kb tune --threads THREADS`) and evaluate with it",
    )
    parser.add_argument(
        "--auto-tune",
        action="store_true",
        help="index.tune: auto for the run: `bot eval` tunes the encoder and switches the index over first, "
        "as the bot does in the background",
    )
    parser.add_argument(
        "--keep-index",
        action="store_true",
        help="reuse private indexes from an earlier run (default: delete them, so timings include indexing)",
    )
    args = parser.parse_args(argv)
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown or not args.settings:
        parser.error(f"--settings: unknown {unknown!r}; choose from {','.join(SETTINGS)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def write_config(
    work: Path, encoder: str | None, model: Path | None = None, bundled: str | None = None, tune: bool = False
) -> Path:
    (work / "dummy.csv").write_text("text,expected\nhello,out_of_scope\n", encoding="utf-8")
    config = work / "config.yml"
    index: dict[str, str] = {"path": str(work / "chroma"), "tune": "auto" if tune else "off"}
    if encoder:
        index["encoder"] = encoder
    if model:
        index["embedding_model"] = str(model.resolve())
    if bundled:
        index["model"] = bundled
    config.write_text(
        "# Written by bench/banking77.py; every other section takes its defaults.\n"
        + yaml.safe_dump({"index": index, "eval": {"cases": str(work / "dummy.csv")}}, sort_keys=False),
        encoding="utf-8",
    )
    return config


# ---------------------------------------------------------------- runs


def run_eval(
    bot: Path, config: Path, knowledge: Path, cases: Path, out: Path, log: Path
) -> tuple[dict[str, Any], float, float | None]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("BOT_CONFIG", None)
    command = [
        str(bot),
        "eval",
        "--config",
        str(config),
        "--knowledge",
        str(knowledge),
        "--cases",
        str(cases),
        "--json",
        str(out),
    ]
    if out.exists():
        out.unlink()
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout + proc.stderr)[-3000:]
        sys.exit(f"bot eval failed (exit {proc.returncode}); full log: {log}\n{tail}")
    rejected = [line for line in proc.stderr.splitlines() if line.startswith("not applied:")]
    if rejected:
        sys.exit(f"bot eval rejected generated knowledge files; see {log}\n" + "\n".join(rejected[:10]))
    report = json.loads(out.read_text(encoding="utf-8"))
    if report.get("unknown_expected"):
        sys.exit(f"expected ids missing from the knowledge base: {report['unknown_expected']}; see {log}")
    match = re.search(r"index sync ([0-9.]+)s", proc.stdout)
    return report, seconds, float(match.group(1)) if match else None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    cases = report["cases"]
    figures = {key: report[key] for key in FIGURES}
    figures["abstained"] = round(sum(c["predicted"] == OUT_OF_SCOPE for c in cases) / len(cases), 4) if cases else 0.0
    in_scope = [c for c in cases if c["expected"] != OUT_OF_SCOPE]
    ranked_first = sum(bool(c["top3"]) and c["top3"][0] == c["expected"] for c in in_scope)
    figures["closed_set_accuracy"] = round(ranked_first / len(in_scope), 4) if in_scope else 0.0
    figures["confused_pairs"] = report.get("confused_pairs", [])
    return figures


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [*FIGURES, "abstained", "closed_set_accuracy", "seconds"]
    row = {key: round(statistics.fmean(r[key] for r in rows), 4) for key in keys}
    row["n_cases"] = rows[0]["n_cases"]
    row["seconds_stdev"] = round(statistics.stdev(r["seconds"] for r in rows), 2) if len(rows) > 1 else 0.0
    row["top1_stdev"] = round(statistics.stdev(r["top1_accuracy"] for r in rows), 4) if len(rows) > 1 else 0.0
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "setting",
        "seed",
        "utterances",
        "n_cases",
        "top-1",
        "top-3",
        "asked back",
        "top-1 or asked with it",
        "in-scope",
        "closed-set",
        "OOS R",
        "OOS P",
        "abstained",
        "p50 ms",
        "p95 ms",
        "index+eval s",
    )
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["setting"],
                str(r["seed"]),
                str(r.get("utterances", "")),
                str(r["n_cases"]),
                f"{r['top1_accuracy']:.2%}",
                f"{r['top3_accuracy']:.2%}",
                f"{r['clarified']:.2%}",
                f"{r['top1_or_clarified']:.2%}",
                f"{r['in_scope_accuracy']:.2%}",
                f"{r['closed_set_accuracy']:.2%}",
                f"{r['oos_recall']:.2%}",
                f"{r['oos_precision']:.2%}",
                f"{r['abstained']:.2%}",
                f"{r['latency_ms_p50']:.1f}",
                f"{r['latency_ms_p95']:.1f}",
                f"{r['seconds']:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data, work = args.data.resolve(), args.work.resolve()
    bot = args.bot if args.bot.is_absolute() else args.bot.resolve()
    if not bot.exists():
        sys.exit(f"{bot}: bot executable not found (pass --bot PATH)")
    info = machine()
    print(f"machine: {machine_line(info)}")
    print(f"data:    {data}")
    print(f"work:    {work}")
    print(f"bot:     {bot}\n", flush=True)

    categories, train, test = load_data(data)
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, args.encoder, args.embedding_model, args.model, args.auto_tune)
    cases = work / "cases.csv"
    ids = faq_ids(categories)
    renamed = {c: i for c, i in ids.items() if c != i}
    if renamed:
        print(f"labels renamed to valid FAQ ids: {renamed}\n", flush=True)
    write_cases(cases, test, ids)
    held_out = frozenset(held_out_intents(categories))
    oos_cases = work / "cases-oos.csv"
    write_cases(oos_cases, test, ids, held_out)
    if not args.keep_index:
        # Private eval indexes live in <work>/eval-indexes (beside index.path).
        # Start cold so the timings include indexing.
        shutil.rmtree(work / "eval-indexes", ignore_errors=True)

    total_started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for setting in args.settings:
        seeds: list[int | None] = list(range(args.seeds)) if setting == "10shot" else [None]
        for seed in seeds:
            run_dir = work / setting if seed is None else work / setting / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            utterances = write_knowledge(run_dir / "knowledge", examples_for(setting, seed, categories, train), ids)
            label = setting if seed is None else f"{setting} seed {seed}"
            print(
                f"running {label}: {len(categories)} intents, {utterances} training utterances, {len(test)} cases ...",
                flush=True,
            )
            run_config, tune_seconds = config, None
            if args.tune:
                run_config, tune_seconds = tuned_config(bot, config, run_dir / "knowledge", run_dir, args.tune)
                print(f"  encoder tuned in {tune_seconds:.1f}s", flush=True)
            report, seconds, sync_seconds = run_eval(
                bot,
                run_config,
                run_dir / "knowledge",
                oos_cases if setting == "oos" else cases,
                run_dir / "eval.json",
                run_dir / "eval.log",
            )
            row = {
                "setting": setting,
                "seed": "-" if seed is None else seed,
                "utterances": utterances,
                **summarise(report),
                "seconds": round(seconds, 2),
                "index_sync_seconds": sync_seconds,
                "tune_seconds": tune_seconds,
                "eval_json": str(run_dir / "eval.json"),
            }
            rows.append(row)
            print(
                f"  top-1 {row['top1_accuracy']:.2%}  top-3 {row['top3_accuracy']:.2%}  "
                f"asked back {row['clarified']:.2%} (top-1 or asked with it {row['top1_or_clarified']:.2%})  "
                f"in-scope {row['in_scope_accuracy']:.2%} (closed-set {row['closed_set_accuracy']:.2%})  "
                f"OOS recall {row['oos_recall']:.2%}  abstained {row['abstained']:.2%}  "
                f"{row['seconds']:.1f}s (index sync {sync_seconds}s)",
                flush=True,
            )

    shown = list(rows)
    means = {}
    for setting in args.settings:
        seeded = [r for r in rows if r["setting"] == setting and r["seed"] != "-"]
        if len(seeded) > 1:
            means[setting] = {"setting": setting, "seed": "mean", **mean_row(seeded)}
            at = max(i for i, r in enumerate(shown) if r["setting"] == setting) + 1
            shown.insert(at, means[setting])
    total = time.perf_counter() - total_started

    print()
    print(f"machine: {machine_line(info)}")
    print(table(shown))
    print(
        "\ntop-1 counts an abstention (predicted out_of_scope) as wrong. closed-set: in-scope cases whose "
        "first-ranked item is right, abstention ignored. OOS figures only mean something for `oos`, "
        f"whose held-out intents are {sorted(held_out)}.\n"
        f"total {total:.1f}s; per-run logs and eval.json under {work}"
    )

    results = {
        "benchmark": "BANKING77",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv] if argv is None else ["banking77.py", *argv],
        "machine": info,
        "data": str(data),
        "config": str(config),
        "settings": args.settings,
        "seeds": args.seeds,
        "n_intents": len(categories),
        "renamed_labels": renamed,
        "total_seconds": round(total, 2),
        "runs": rows,
        "means": means,
    }
    (work / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
