#!/usr/bin/env python3
"""The query encoder's runtimes side by side: speed, closeness to torch, and answer accuracy through `bot eval`.

For each runtime (`index.encoder`: torch, onnx, onnx-int8) in one run:
  1. speed: load time (the one-off ONNX export included, into a fresh cache), then the encode time of
     200 single messages (BANKING77 test messages, one thread, one at a time as the bot encodes them):
     p50 and p90;
  2. closeness: cosine of each message's vector to torch's (mean, lowest); for int8, whether a message's
     vector is the same alone as in a batch of 16;
  3. accuracy: `bot eval` on the demo cases (evals/demo-cases.csv over knowledge/) and `bench/banking77.py`
     (full, and 10-shot over --seeds seeds), each with that runtime, top-1 side by side with torch's;
     plus the full setting's index sync time (preparing the 10,003-phrasing knowledge base).

The adoption rule (issue 24): int8 is the default only where top-1 stays within 0.3 points of fp32 on
every data set; the verdict is printed. Nothing is downloaded; the data is read in place.

Usage: python bench/encoders.py [--encoders torch,onnx,onnx-int8] [--seeds 5] [--work DIR] [--skip-banking77]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from banking77_data import DEFAULT_DATA  # bench/banking77_data.py (scripts run from bench/)
from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bot.retrieval.embedding import Embedder, EncoderKind  # noqa: E402

KINDS = ("torch", "onnx", "onnx-int8")
TOLERANCE_POINTS = 0.3


def speed_and_closeness(kind: str, texts: list[str], reference: np.ndarray | None) -> tuple[dict[str, Any], Any]:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        embedder = Embedder(encoder=EncoderKind(kind), cache_dir=Path(cache), threads=1)
        embedder.load()
        load_s = time.perf_counter() - started
        for text in texts[:20]:
            embedder.embed([text])  # warm-up
        times, vectors = [], []
        for text in texts:
            began = time.perf_counter()
            vectors.append(embedder.embed([text])[0])
            times.append((time.perf_counter() - began) * 1000)
        stacked = np.stack(vectors)
        times.sort()
        row: dict[str, Any] = {
            "encoder": kind,
            "load_s": round(load_s, 2),
            "encode_ms_p50": round(times[len(times) // 2], 3),
            "encode_ms_p90": round(times[int(len(times) * 0.9)], 3),
        }
        if reference is not None:
            cosine = (stacked * reference).sum(axis=1)
            row["cosine_to_torch_mean"] = round(float(cosine.mean()), 4)
            row["cosine_to_torch_min"] = round(float(cosine.min()), 4)
        batched = embedder.embed(texts[:16])
        row["same_alone_and_in_a_batch"] = bool(np.allclose(batched, stacked[:16], atol=1e-6))
        return row, stacked


def eval_demo(kind: str, work: Path, bot: Path) -> dict[str, Any]:
    run = work / kind / "demo"
    run.mkdir(parents=True, exist_ok=True)
    config = run / "config.yml"
    config.write_text(yaml.safe_dump({"index": {"path": str(run / "chroma"), "encoder": kind}}), encoding="utf-8")
    out = run / "eval.json"
    command = [str(bot), "eval", "--config", str(config), "--knowledge", str(REPO / "knowledge")]
    command += ["--cases", str(REPO / "evals" / "demo-cases.csv"), "--json", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not out.is_file():
        sys.exit(f"bot eval failed for {kind}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    report = json.loads(out.read_text())
    figures = report.get("figures", report)
    return {"top1": figures["top1_accuracy"], "n": figures["n_cases"], "p50_ms": figures["latency_ms_p50"]}


def eval_banking77(kind: str, work: Path, seeds: int, bot: Path) -> dict[str, Any]:
    run = work / kind / "banking77"
    command = [sys.executable, str(REPO / "bench" / "banking77.py"), "--work", str(run), "--encoder", kind]
    command += ["--settings", "full,10shot", "--seeds", str(seeds), "--bot", str(bot)]
    proc = subprocess.run(command, cwd=REPO / "bench", capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"banking77.py failed for {kind}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    results = json.loads((run / "results.json").read_text())
    full = next(r for r in results["runs"] if r["setting"] == "full")
    shots = [r["top1_accuracy"] for r in results["runs"] if r["setting"] == "10shot"]
    return {
        "full_top1": full["top1_accuracy"],
        "full_sync_s": full.get("index_sync_seconds"),
        "full_eval_s": full["seconds"],
        "full_p50_ms": full.get("latency_ms_p50"),
        "10shot_top1_mean": round(statistics.mean(shots), 4),
        "10shot_top1_stdev": round(statistics.stdev(shots), 4) if len(shots) > 1 else 0.0,
    }


def points(value: float) -> str:
    return f"{100 * value:.2f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default=",".join(KINDS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / ".data" / "bench" / "encoders")
    parser.add_argument("--bot", type=Path, default=Path(sys.executable).parent / "bot")
    parser.add_argument("--skip-banking77", action="store_true", help="speed, closeness and the demo cases only")
    args = parser.parse_args()
    kinds = [k for k in args.encoders.split(",") if k]
    if "torch" not in kinds:
        kinds.insert(0, "torch")  # the reference every other runtime is compared with
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    info = machine()
    print(f"machine: {machine_line(info)}; load average {info['load_average_at_start']}", flush=True)
    with (args.data / "test.csv").open(encoding="utf-8") as stream:
        texts = [row["text"] for row in csv.DictReader(stream)][:200]

    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    for kind in kinds:
        print(f"{kind}: speed and closeness ...", flush=True)
        row, vectors = speed_and_closeness(kind, texts, reference)
        if kind == "torch":
            reference = vectors
        print(f"{kind}: demo cases ...", flush=True)
        row["demo"] = eval_demo(kind, args.work, args.bot)
        if not args.skip_banking77:
            print(f"{kind}: BANKING77 full and 10-shot x {args.seeds} ...", flush=True)
            row["banking77"] = eval_banking77(kind, args.work, args.seeds, args.bot)
        rows.append(row)

    torch_row = rows[0]
    print(f"\nmachine: {machine_line(info)}")
    header = "| encoder | load s | encode p50 / p90 ms | ratio to torch | cosine to torch mean / min | demo top-1 |"
    align = "|---|---:|---:|---:|---:|---:|"
    if not args.skip_banking77:
        header += " BANKING77 full | 10-shot mean ± sd | full index sync s |"
        align += "---:|---:|---:|"
    print(header)
    print(align)
    verdicts = []
    for row in rows:
        ratio = row["encode_ms_p50"] / torch_row["encode_ms_p50"]
        cosine = (
            f"{row['cosine_to_torch_mean']:.4f} / {row['cosine_to_torch_min']:.4f}"
            if "cosine_to_torch_mean" in row
            else "1"
        )
        line = (
            f"| {row['encoder']} | {row['load_s']:.1f} | {row['encode_ms_p50']:.2f} / {row['encode_ms_p90']:.2f} "
            f"| {ratio:.2f} | {cosine} | {points(row['demo']['top1'])} |"
        )
        deltas = [row["demo"]["top1"] - torch_row["demo"]["top1"]]
        if "banking77" in row:
            b = row["banking77"]
            line += (
                f" {points(b['full_top1'])} | {points(b['10shot_top1_mean'])} ± {100 * b['10shot_top1_stdev']:.2f}"
                f" | {b['full_sync_s']} |"
            )
            deltas += [
                b["full_top1"] - torch_row["banking77"]["full_top1"],
                b["10shot_top1_mean"] - torch_row["banking77"]["10shot_top1_mean"],
            ]
        print(line)
        if row["encoder"] != "torch":
            worst = min(deltas) * 100
            ok = worst >= -TOLERANCE_POINTS
            verdicts.append(
                f"{row['encoder']}: worst top-1 change {worst:+.2f} points "
                f"({'within' if ok else 'outside'} {TOLERANCE_POINTS}); same vector alone and in a batch: "
                f"{row['same_alone_and_in_a_batch']}"
            )
    print("\n" + "\n".join(verdicts))
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "encoders.json"
    out.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
