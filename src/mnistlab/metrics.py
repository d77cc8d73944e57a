"""Classification metrics, computed with scikit-learn from logits and labels.

The keys of `classification_metrics` are the contract of `mnistlab evaluate --json`
and of the test metrics in `summary.json`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

# The keys of classification_metrics, in its order.
METRIC_KEYS = (
    "accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "confusion_matrix", "per_class", "samples",
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def macro_auc(labels: np.ndarray, probs: np.ndarray, present: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC-AUC over the classes present in `labels` (None with fewer than two)."""
    from sklearn.metrics import roc_auc_score

    if present.sum() < 2:
        return None
    classes = np.arange(probs.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if probs.shape[1] == 2:
            # scikit-learn's binary AUC takes the positive class's score, not both columns.
            auc = float(roc_auc_score(labels, probs[:, 1]))
        elif present.all():
            auc = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=classes))
        else:
            # One-vs-rest AUC per present class; absent classes have no positives to rank.
            auc = float(np.mean([roc_auc_score(labels == k, probs[:, k]) for k in classes[present]]))
    return None if math.isnan(auc) else auc


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, macro one-vs-rest ROC-AUC, per-class scores and the confusion matrix.

    Args:
        logits: [N, K] scores (logits or probabilities; only their order and softmax are used).
        labels: [N] integer class indices.
        class_names: K names for `per_class`; defaults to "0".."K-1".

    Returns:
        A dict with keys accuracy, precision_macro, recall_macro, f1_macro, auc_macro (None when the
        labels hold fewer than two classes), confusion_matrix (K x K list, rows = true class),
        per_class (list of {class, precision, recall, f1, support}) and samples.

    Example:
        >>> m = classification_metrics(np.eye(3), np.array([0, 1, 2]))
        >>> m["accuracy"], m["f1_macro"]
        (1.0, 1.0)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    num_classes = logits.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    preds = logits.argmax(axis=1)
    classes = np.arange(num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=classes, zero_division=0
    )
    # Macro averages over the classes that occur in the labels or the predictions, as scikit-learn
    # does when `labels` is left out: a class absent from a small test split and never predicted
    # would otherwise drag every macro score down by 1/K, while one predicted but absent is a
    # real mistake (its precision is 0) and counts.
    present = support > 0
    scored = present | (np.bincount(preds, minlength=num_classes)[:num_classes] > 0)
    auc = macro_auc(labels, softmax(logits), present)
    return {
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "precision_macro": float(precision[scored].mean()) if scored.any() else 0.0,
        "recall_macro": float(recall[scored].mean()) if scored.any() else 0.0,
        "f1_macro": float(f1[scored].mean()) if scored.any() else 0.0,
        "auc_macro": auc,
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
        "per_class": [
            {
                "class": names[k],
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k in classes
        ],
        "samples": int(len(labels)),
    }
