"""Held-out report of a loaded model on labelled images: metrics, ECE, ROC curves, the referral flag's
sensitivity and specificity at the model's stored thresholds, the share of real images the input gate
would refuse, and bootstrap 95% intervals that resample lesions (images of one lesion move together)."""

import numpy as np
from PIL import Image
from sklearn.metrics import roc_curve

from core.data.cache import cached_images
from core.evaluation.calibration import (expected_calibration_error, is_malignant, malignancy_risk, referral_key,
                                         reliability_bins, softmax_np)
from core.evaluation.inference import batched_outputs, calibration_for
from core.evaluation.metrics import classification_metrics
from core.evaluation.ood import dermoscopy_check

SUMMARY = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
N_BOOT = 500


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


def triage_figures(y_true, probs, classes, threshold: float) -> dict:
    """Sensitivity and specificity of 'refer when malignancy risk >= threshold' for malignant lesions."""
    malignant = is_malignant(y_true, classes)
    referred = malignancy_risk(probs, classes) >= threshold
    return {"sensitivity": float(referred[malignant].mean()) if malignant.any() else float("nan"),
            "specificity": float((~referred[~malignant]).mean()) if (~malignant).any() else float("nan"),
            "n_malignant": int(malignant.sum()), "n_benign": int((~malignant).sum())}


def resamples(groups, n_boot: int = N_BOOT, seed: int = 0):
    """Bootstrap index arrays that draw whole groups (lesions) with replacement."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def percentile_ci(values) -> list:
    return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]


def bootstrap_ci(y_true, probs, classes, groups=None, thresholds=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Percentile 95% intervals of the summary metrics (and of the triage figures at each of `thresholds`,
    {key: threshold}) over resamples of lesions (`groups`; default: each image its own lesion)."""
    groups = np.arange(len(y_true)) if groups is None else groups
    samples = {k: [] for k in SUMMARY}
    triage = {key: {"sensitivity": [], "specificity": []} for key in (thresholds or {})}
    for idx in resamples(groups, n_boot, seed):
        m = classification_metrics(y_true[idx], probs[idx], classes)
        for k in SUMMARY:
            samples[k].append(m[k])
        for key, threshold in (thresholds or {}).items():
            t = triage_figures(y_true[idx], probs[idx], classes, threshold)
            triage[key]["sensitivity"].append(t["sensitivity"])
            triage[key]["specificity"].append(t["specificity"])
    out = {k: percentile_ci(v) for k, v in samples.items()}
    if triage:
        out["triage"] = {key: {k: percentile_ci(v) for k, v in figures.items()} for key, figures in triage.items()}
    return out


def paired_difference(y_true, probs_a, probs_b, classes, groups=None, thresholds=(None, None),
                      n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Model B minus model A on the same images: the summary metrics and, with a referral threshold per model
    (`thresholds`), the referral sensitivity and specificity, each with a 95% interval from paired resamples of
    lesions (both models scored on the same draw, so the images' shared difficulty cancels) and the share of
    draws in which B is ahead. Two models' separate intervals overlap long before their difference is unclear."""
    groups = np.arange(len(y_true)) if groups is None else groups

    def figures(idx):
        a = classification_metrics(y_true[idx], probs_a[idx], classes)
        b = classification_metrics(y_true[idx], probs_b[idx], classes)
        out = {k: b[k] - a[k] for k in SUMMARY}
        if None not in thresholds:
            ta, tb = (triage_figures(y_true[idx], p[idx], classes, t) for p, t in zip((probs_a, probs_b), thresholds))
            out.update({f"referral_{k}": tb[k] - ta[k] for k in ("sensitivity", "specificity")})
        return out

    point = figures(np.arange(len(y_true)))
    draws = [figures(idx) for idx in resamples(groups, n_boot, seed)]
    return {k: {"difference": float(v), "ci95": percentile_ci([d[k] for d in draws]),
                "b_ahead_fraction": float(np.mean([d[k] > 0 for d in draws]))} for k, v in point.items()}


def split_report(classifier, images_uint8, labels, groups=None, with_ci: bool = True, tta=None,
                 gate_images=None, keep_predictions: bool = False, outputs=None) -> dict:
    """Metrics of `classifier` (calibrated probabilities, in its validation-chosen inference mode unless
    `tta` says otherwise) on model-size uint8 images with integer labels; `groups`: lesion ids for the CIs;
    `gate_images`: the same images at the size of the classifier's gate model, if it has one;
    `keep_predictions`: also return the per-image probabilities; `outputs`: the model's outputs on these images
    in that mode, when already computed (in parts, by `model_outputs_on`)."""
    cfg = classifier.config
    calibration = calibration_for(classifier.calibration, tta)
    use_tta = bool(calibration.get("tta", False))
    out = outputs or batched_outputs(classifier.outputs, images_uint8, cfg, tta=use_tta)
    probs = softmax_np(out.logits, float(calibration.get("temperature", 1.0)))
    labels = np.asarray(labels)
    report = classification_metrics(labels, probs, cfg.classes)
    report["tta"] = use_tta
    report["ece"] = expected_calibration_error(probs, labels)
    report["reliability"] = reliability_bins(probs, labels)
    report["roc"] = roc_points(labels, probs, cfg.classes)
    points = {k: p for k, p in calibration.get("referral", {}).items() if p.get("threshold") is not None}
    report["triage"] = {key: {"threshold": p["threshold"], "target_sensitivity": p["target_sensitivity"],
                              "val_sensitivity": p["val_sensitivity"], "val_specificity": p["val_specificity"],
                              **triage_figures(labels, probs, cfg.classes, p["threshold"])}
                        for key, p in points.items()}
    refused = np.array([bool(dermoscopy_check(Image.fromarray(np.asarray(im)))) for im in images_uint8])
    if classifier.feature_distance is not None and out.features is not None:
        refused |= classifier.feature_distance.unlike_training(out.features)
    gate = classifier.gate
    if gate is not None and gate.feature_distance is not None and gate_images is not None:
        gate_features = batched_outputs(gate.outputs, gate_images, gate.config).features
        refused |= gate.feature_distance.unlike_training(gate_features)
    report["not_dermoscopic_fraction"] = float(refused.mean())  # real images the input gate would refuse
    if keep_predictions:  # per image, in input order: calibrated probabilities, risk, refusal
        report["predictions"] = {"probabilities": probs.round(6).tolist(),
                                 "malignancy_risk": malignancy_risk(probs, cfg.classes).round(6).tolist(),
                                 "not_dermoscopic": refused.tolist()}
    if with_ci:
        ci = bootstrap_ci(labels, probs, cfg.classes, groups, {k: p["threshold"] for k, p in points.items()})
        for key, figures in ci.pop("triage", {}).items():
            report["triage"][key]["ci95"] = figures
        report["ci95"] = ci
        repeated = groups is not None and len(np.unique(groups)) < len(groups)
        report["ci_resamples"] = "lesions" if repeated else "images (one per lesion)"
    return report


def model_outputs_on(classifier, images_uint8, tta=None, batch_size: int = 16):
    """The classifier's outputs on some images, in the inference mode `split_report` uses: one part of a report
    computed on its own (a server spreads the parts of a large set over its workers). Small batches keep a
    server's memory flat."""
    use_tta = bool(calibration_for(classifier.calibration, tta).get("tta", False))
    cfg = classifier.config
    return batched_outputs(classifier.outputs, images_uint8, cfg, batch_size=batch_size, tta=use_tta)


def default_triage(report: dict, target: float = 0.9) -> dict:
    """The triage figures of one target sensitivity from a report (empty when the model has none)."""
    return report.get("triage", {}).get(referral_key(target), {})


def records_report(classifier, records, indices=None, progress=None, tta=None, keep_predictions: bool = False) -> dict:
    """`split_report` of `records[indices]` (all records by default), images decoded through the one
    preprocessing path (and its cache), with CIs that resample lesions."""
    indices = np.arange(len(records)) if indices is None else np.asarray(indices)
    images = cached_images(records, classifier.config.img_size, progress=progress)
    labels = np.array([records[i].label for i in indices])
    lesions = np.array([records[i].lesion_id for i in indices])
    gate_images = None
    if classifier.gate is not None:
        gate_images = cached_images(records, classifier.gate.config.img_size)[indices]
    return split_report(classifier, images[indices], labels, groups=lesions, tta=tta, gate_images=gate_images,
                        keep_predictions=keep_predictions)


def with_ci(value, ci=None) -> str:
    """`0.655 (0.589–0.723)`: a figure with its 95% interval, as every table of the project prints it."""
    if value is None or value != value:
        return "—"
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})" if ci else f"{value:.3f}"


def summary_rows(models: dict, target_key: str, sets: dict) -> list:
    """Per model and labelled set (`sets`: key in each model's entry -> label): summary metrics and the referral
    flag's sensitivity / specificity at the model's threshold for `target_key`, with their 95% intervals, and the
    share of real images refused. One row format for the app's tables and the PDF summary."""
    rows = []
    for name, entry in models.items():
        for split, split_label in sets.items():
            report = entry.get(split)
            if not report:
                continue
            ci = report.get("ci95", {})
            triage = report.get("triage", {}).get(target_key, {})
            tci = triage.get("ci95", {})
            rows.append({"model": name, "images": f"{split_label}, n = {report['n']}",
                         "accuracy": with_ci(report["accuracy"], ci.get("accuracy")),
                         "balanced accuracy": with_ci(report["balanced_accuracy"], ci.get("balanced_accuracy")),
                         "macro AUC": with_ci(report["auc"], ci.get("auc")),
                         "referral threshold": f"{triage['threshold']:.3f}" if triage else "—",
                         "referral sensitivity": with_ci(triage.get("sensitivity"), tci.get("sensitivity")),
                         "referral specificity": with_ci(triage.get("specificity"), tci.get("specificity")),
                         "refused as not dermoscopic": (f"{report['not_dermoscopic_fraction']:.1%}"
                                                        if "not_dermoscopic_fraction" in report else "—")})
    return rows
