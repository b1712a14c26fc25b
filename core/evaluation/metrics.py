"""Classification metrics in one dict: the schema `core.evaluate`, training and the app all share."""

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from core.classes import CLASSES


def classification_metrics(y_true, probs, classes=CLASSES) -> dict:
    """accuracy, balanced_accuracy (mean per-class recall), macro_f1, auc (one-vs-rest macro),
    per_class, confusion_matrix (rows true, columns predicted), classes, n."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(labels)), where=present)
    precision, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    aucs = []
    for k in labels:
        positives = y_true == k
        if positives.any() and (~positives).any():
            aucs.append(roc_auc_score(positives, probs[:, k]))
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[k for k in labels if present[k]], average="macro", zero_division=0)),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "per_class": {
            c: {"precision": float(precision[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(support[k])}
            for k, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "n": int(len(y_true)),
    }
