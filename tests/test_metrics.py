"""Metrics against hand-computed cases and scikit-learn as the oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from mnistlab.metrics import METRIC_KEYS, classification_metrics


def test_hand_computed_case():
    # 3 classes, 6 samples; predictions: 0,0,1,1,2,0 for labels 0,0,1,2,2,2
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 0, 1, 1, 2, 0])
    logits = np.eye(3)[preds] * 5.0
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class a: tp 2, fp 1 -> p 2/3, r 1;  b: tp 1, fp 1 -> p 1/2, r 1;  c: tp 1, fp 0 -> p 1, r 1/3
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    f1 = [2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5, 2 * (1 / 3) / (4 / 3)]
    assert m["f1_macro"] == pytest.approx(np.mean(f1))
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [1, 1, 1]]
    assert [r["class"] for r in m["per_class"]] == ["a", "b", "c"]
    assert [r["support"] for r in m["per_class"]] == [2, 1, 3]
    assert m["samples"] == 6


def test_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    logits = rng.normal(size=(500, 10)) + 2.0 * np.eye(10)[labels]
    m = classification_metrics(logits, labels)
    preds = logits.argmax(1)
    assert m["precision_macro"] == pytest.approx(precision_score(labels, preds, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(labels, preds, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["auc_macro"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert 0.5 < m["auc_macro"] < 1.0


def test_perfect_and_single_class():
    m = classification_metrics(np.eye(4) * 3, np.arange(4))
    assert m["accuracy"] == m["f1_macro"] == m["auc_macro"] == 1.0
    single = classification_metrics(np.array([[2.0, 0.0], [1.0, 0.5]]), np.array([0, 0]))
    assert single["auc_macro"] is None  # AUC needs two classes
    assert single["accuracy"] == 1.0


def test_absent_class_does_not_drag_macro_scores():
    labels = np.array([0, 0, 1, 1])
    logits = np.eye(3)[labels] * 4.0  # class 2 never occurs and is never predicted
    m = classification_metrics(logits, labels)
    assert m["f1_macro"] == pytest.approx(1.0)
    assert m["auc_macro"] == pytest.approx(1.0)
    assert m["per_class"][2]["support"] == 0


def test_binary_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[labels]
    m = classification_metrics(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["auc_macro"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    assert len(m["confusion_matrix"]) == 2


def test_a_predicted_class_absent_from_the_labels_counts_in_the_macro_scores():
    # Class 2 is predicted once but never occurs: scikit-learn averages over the classes in the
    # labels or the predictions, so its precision 0 (and F1 0) count.
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 0, 1, 2])
    m = classification_metrics(np.eye(3)[preds], labels)
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro")) == pytest.approx(5 / 9)
    assert m["precision_macro"] == pytest.approx(precision_score(labels, preds, average="macro", zero_division=0))
    assert m["recall_macro"] == pytest.approx(recall_score(labels, preds, average="macro", zero_division=0))


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=25),
)))
def test_matches_scikit_learn_on_random_small_cases(case):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    k, pairs = case
    labels = np.array([y for y, _ in pairs])
    preds = np.array([p for _, p in pairs])
    m = classification_metrics(np.eye(k)[preds] * 3.0, labels)
    assert set(m) == set(METRIC_KEYS)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert m[f"{name}_macro"] == pytest.approx(fn(labels, preds, average="macro", zero_division=0)), name
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=np.arange(k), zero_division=0)
    assert [row["precision"] for row in m["per_class"]] == pytest.approx(list(p))
    assert [row["recall"] for row in m["per_class"]] == pytest.approx(list(r))
    assert [row["f1"] for row in m["per_class"]] == pytest.approx(list(f))
    assert [row["support"] for row in m["per_class"]] == list(s)
    assert m["samples"] == len(labels) and np.array(m["confusion_matrix"]).sum() == len(labels)
