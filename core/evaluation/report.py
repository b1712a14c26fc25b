"""Held-out test report of a loaded model: metrics, ROC curves and bootstrap 95% intervals."""

import numpy as np
from sklearn.metrics import roc_curve

from core.evaluation.calibration import softmax_np
from core.evaluation.inference import batched_logits, calibration_for
from core.evaluation.metrics import classification_metrics

SUMMARY = ("accuracy", "balanced_accuracy", "macro_f1", "auc")


def roc_points(y_true, probs, classes, max_points: int = 60) -> dict:
    """Per class one-vs-rest ROC curve, thinned to at most max_points points."""
    out = {}
    for k, c in enumerate(classes):
        positives = y_true == k
        if positives.any() and (~positives).any():
            fpr, tpr, _ = roc_curve(positives, probs[:, k])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
            out[c] = {"fpr": [round(float(v), 4) for v in fpr[keep]], "tpr": [round(float(v), 4) for v in tpr[keep]]}
    return out


def bootstrap_ci(y_true, probs, classes, n_boot: int = 500, seed: int = 0) -> dict:
    """Percentile 95% intervals of the summary metrics over test-set resamples."""
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in SUMMARY}
    n = len(y_true)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = classification_metrics(y_true[idx], probs[idx], classes)
        for k in SUMMARY:
            samples[k].append(m[k])
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in samples.items()}


def split_report(classifier, images_uint8, labels, with_ci: bool = True, tta=None) -> dict:
    """Metrics of `classifier` (calibrated probabilities, in its validation-chosen inference mode unless
    `tta` says otherwise) on cached images with integer labels."""
    cfg = classifier.config
    calibration = calibration_for(classifier.calibration, tta)
    use_tta = bool(calibration.get("tta", False))
    logits = batched_logits(classifier.logits, images_uint8, cfg.mean, cfg.std, tta=use_tta)
    probs = softmax_np(logits, float(calibration.get("temperature", 1.0)))
    labels = np.asarray(labels)
    report = classification_metrics(labels, probs, cfg.classes)
    report["tta"] = use_tta
    report["roc"] = roc_points(labels, probs, cfg.classes)
    if with_ci:
        report["ci95"] = bootstrap_ci(labels, probs, cfg.classes)
    return report
