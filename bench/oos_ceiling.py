#!/usr/bin/env python3
"""How far any out-of-scope signal on an encoder's vectors could go: the ceiling for issue 23's OOS target.

The target: on BANKING77 with 10 intents held out of the knowledge base (bench/banking77.py's `oos`
setting), decline at least 80% of the held-out intents' test messages while in-scope accuracy stays
within 1.5 points of closed-set. This script does not build a method. For each signal a detector could
threshold, it reports
  - AUROC, in-scope against held-out test messages;
  - the best recall any threshold could give within the 1.5-point cost, the threshold picked ON THE TEST
    SET (an oracle: no method that picks it from the knowledge base can do better with that signal);
  - the same for a logistic combination of all signals fitted ON THE TEST SET (an upper bound for
    combining them).
If even those fall well short of 80%, no threshold or combination of these signals meets the target.

Signals, higher meaning more in scope: the classifier's highest probability, highest logit and
log-sum-exp of logits (the bot's classifier: logistic regression, C=10, on the in-scope phrasings); cosine
to the nearest phrasing and mean of the 5 nearest; cosine to the nearest intent centroid; Mahalanobis
distance to the nearest intent (shared covariance) and the relative Mahalanobis distance (minus the
distance to one Gaussian over all phrasings).

Usage: python bench/oos_ceiling.py [--model all-MiniLM-L6-v2|all-mpnet-base-v2] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from banking77_data import DEFAULT_DATA, held_out_intents, load_data  # bench/banking77_data.py (run from bench/)
from machine import machine, machine_line
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bot.retrieval.embedding import Embedder  # noqa: E402
from bot.retrieval.models import BundledModel, model_folder  # noqa: E402
from bot.retrieval.onnx_encoder import default_cache_dir  # noqa: E402

COST_POINTS = 0.015
RIDGE = 1e-3  # added to the covariance's diagonal


def signals(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each signal for every test vector, and the classifier's predicted intent."""
    classifier = LogisticRegression(C=10.0, max_iter=300).fit(train, labels)
    logits = test @ classifier.coef_.T + classifier.intercept_
    probabilities = classifier.predict_proba(test)
    similarity = test @ train.T
    intents = np.unique(labels)
    means = np.stack([train[labels == k].mean(axis=0) for k in intents])
    centroids = means / np.linalg.norm(means, axis=1, keepdims=True)
    precision = _precision(train - means[np.searchsorted(intents, labels)])
    nearest_intent = np.stack([_mahalanobis(test - mean, precision) for mean in means], axis=1).min(axis=1)
    background = _mahalanobis(test - train.mean(axis=0), _precision(train - train.mean(axis=0)))
    found = {
        "classifier: highest probability": probabilities.max(axis=1),
        "classifier: highest logit": logits.max(axis=1),
        "classifier: log-sum-exp of logits": logsumexp(logits, axis=1),
        "cosine to the nearest phrasing": similarity.max(axis=1),
        "mean cosine to the 5 nearest": np.sort(similarity, axis=1)[:, -5:].mean(axis=1),
        "cosine to the nearest intent centroid": (test @ centroids.T).max(axis=1),
        "Mahalanobis to the nearest intent": -nearest_intent,
        "relative Mahalanobis": -(nearest_intent - background),
    }
    return found, intents[probabilities.argmax(axis=1)]


def _precision(residuals: np.ndarray) -> np.ndarray:
    covariance = residuals.T @ residuals / len(residuals) + RIDGE * np.eye(residuals.shape[1])
    inverse: np.ndarray = np.linalg.inv(covariance)
    return inverse


def _mahalanobis(offsets: np.ndarray, precision: np.ndarray) -> np.ndarray:
    distances: np.ndarray = np.einsum("nd,de,ne->n", offsets, precision, offsets)
    return distances


def oracle_recall(score: np.ndarray, in_scope: np.ndarray, correct: np.ndarray) -> float:
    """The best out-of-scope recall of any threshold on `score` within COST_POINTS of closed-set accuracy."""
    closed = correct[in_scope].mean()
    best = 0.0
    for threshold in np.unique(score):
        kept = score >= threshold
        if (correct & kept)[in_scope].mean() >= closed - COST_POINTS:
            best = max(best, float((~kept)[~in_scope].mean()))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BundledModel.MINILM.value, choices=[m.value for m in BundledModel])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    categories, train_rows, test_rows = load_data(args.data)
    held_out = set(held_out_intents(categories))
    kept = [c for c in categories if c not in held_out]
    train_texts = [text for c in kept for text in train_rows[c]]
    train_labels = np.array([c for c in kept for _ in train_rows[c]])
    embedder = Embedder(model_folder(BundledModel(args.model), default_cache_dir()), threads=2)
    started = time.perf_counter()
    train = embedder.embed(train_texts)
    test = embedder.embed([text for text, _ in test_rows])
    embed_s = time.perf_counter() - started
    truth = np.array([c for _, c in test_rows])
    in_scope = np.array([c not in held_out for c in truth])
    found, predicted = signals(train, train_labels, test)
    correct = (predicted == truth) & in_scope
    print(f"{machine_line(machine())}\n{args.model} ({embedder.kind.value}), embedded in {embed_s:.0f} s; "
          f"held out: {sorted(held_out)}")  # fmt: skip
    print(f"closed-set in-scope accuracy {correct[in_scope].mean():.2%} "
          f"({in_scope.sum()} in-scope, {(~in_scope).sum()} held-out test messages)\n")  # fmt: skip
    print(f"| signal | AUROC | best OOS recall within {COST_POINTS * 100:.1f} points (threshold picked on test) |")
    print("|---|---:|---:|")
    for name, score in found.items():
        print(f"| {name} | {roc_auc_score(in_scope, score):.4f} | {oracle_recall(score, in_scope, correct):.2%} |")
    features = np.column_stack(list(found.values()))
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    combined = LogisticRegression(max_iter=1000).fit(features, in_scope).decision_function(features)
    print(f"| all of them, combined by a logistic regression fitted on test | "
          f"{roc_auc_score(in_scope, combined):.4f} | {oracle_recall(combined, in_scope, correct):.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
