"""Site calibration: a clinic's own temperature, "uncertain" threshold and referral thresholds for a model file,
fitted on one part of the clinic's labelled cases and measured on the other part (never the same images).

`weights/site_calibration.json` maps a model file's sha256 to its versions, oldest first; the last one is
active and replaces what the file's validation calibration says about answers (the input gate and the energy
test stay as fitted on HAM10000: a clinic's lesion images cannot tell what a non-lesion looks like). Each write
is atomic under the weights folder's lock; `rollback` removes the active version, so the one before it (or
the validation calibration) applies again, as a promotion's rollback does.
"""

import copy
import datetime as dt
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.model_selection import StratifiedGroupKFold

from core.classes import CLASSES
from core.data.cache import cached_images
from core.evaluation.calibration import (REFERRAL_TARGETS, fit_calibration, is_malignant, malignancy_risk, referral_key,
                                         softmax_np)
from core.evaluation.inference import batched_outputs
from core.filelock import exclusive_lock
from core.jsonfile import read_json, write_json
from core.paths import weights_dir

SITE_FILE = "site_calibration.json"
# Malignant cases needed in each half. With 20, a measured 90% sensitivity (18 of 20) has a 95% interval of
# about 0.70-0.97: the least that says anything. Fewer and the set is refused.
MIN_MALIGNANT_PER_PART = 20


class SiteCalibrationError(ValueError):
    """The labelled set cannot support a site calibration (too few malignant cases, one class only, ...)."""


def site_path(root=None) -> Path:
    return Path(root or weights_dir()) / SITE_FILE


def read_site(root=None) -> dict:
    """{model sha256: [version, ...]}, parsed once per version of the file."""
    return read_json(site_path(root))


def active_site(sha256: str, root=None):
    """The active site calibration of this model file, or None."""
    versions = read_site(root).get(sha256, [])
    return copy.deepcopy(versions[-1]) if versions else None


def apply_site(calibration: dict, site: dict) -> dict:
    """The validation calibration with the site's temperature, confidence threshold and referral thresholds for
    the mode the site was fitted in (the other inference mode keeps the validation figures)."""
    fitted = {k: site[k] for k in ("temperature", "confidence_threshold", "referral")}
    summary = site_summary(site)
    if bool(site["tta"]) == bool(calibration.get("tta", False)):
        return {**calibration, **fitted, "site": summary}
    other = calibration.get("other", calibration)
    return {**calibration, "other": {**other, **fitted, "site": summary}}


def site_summary(site: dict) -> str:
    """One line for the app and the PDF: whose calibration answers, fitted when and on how much."""
    p = site["provenance"]
    return (f"site calibration of {p['date'][:10]} ({p['name']}): fitted on {p['n_fit']} cases "
            f"({p['malignant_fit']} malignant), measured on {p['n_held_back']} held back")


def wilson_ci(k: int, n: int) -> list:
    if not n:
        return [None, None]
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def referral_figures(risk, malignant, threshold) -> dict:
    """Sensitivity and specificity of referring at risk >= threshold, with Wilson 95% intervals."""
    if threshold is None:
        return {"threshold": None}
    referred = np.asarray(risk) >= threshold
    malignant = np.asarray(malignant, dtype=bool)
    caught, cleared = int((referred & malignant).sum()), int((~referred & ~malignant).sum())
    n_mal, n_ben = int(malignant.sum()), int((~malignant).sum())
    return {"threshold": float(threshold),
            "sensitivity": caught / n_mal if n_mal else None, "sensitivity_ci95": wilson_ci(caught, n_mal),
            "specificity": cleared / n_ben if n_ben else None, "specificity_ci95": wilson_ci(cleared, n_ben),
            "n_malignant": n_mal, "n_benign": n_ben}


def site_halves(labels, groups, seed: int = 0) -> tuple:
    """(fit indices, held-back indices): two halves with the same share of malignant cases, a lesion's images
    always in the same half."""
    malignant = is_malignant(labels).astype(int)
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    fit, held = next(splitter.split(np.zeros(len(labels)), malignant, groups))
    return np.sort(fit), np.sort(held)


def fit_site(classifier, records, name: str, seed: int = 0, progress=None, now=None) -> dict:
    """A proposed site calibration (not stored) for `classifier` from labelled `records`: fitted on one half,
    with before (validation calibration) and after figures on the other half.

    Raises SiteCalibrationError when either half has fewer than MIN_MALIGNANT_PER_PART malignant cases."""
    labels = np.array([r.label for r in records])
    groups = np.array([r.lesion_id or r.image_id for r in records])
    malignant = is_malignant(labels)
    need = 2 * MIN_MALIGNANT_PER_PART
    if malignant.sum() < need or (~malignant).sum() < need:
        raise SiteCalibrationError(
            f"a site calibration needs at least {need} malignant (mel, bcc, akiec) and {need} benign cases, "
            f"half to fit and half to measure; this set has {int(malignant.sum())} malignant and "
            f"{int((~malignant).sum())} benign")
    fit, held = site_halves(labels, groups, seed)
    for part, idx in (("fitting", fit), ("measuring", held)):
        if malignant[idx].sum() < MIN_MALIGNANT_PER_PART:
            raise SiteCalibrationError(f"the {part} half has only {int(malignant[idx].sum())} malignant cases "
                                       f"(lesions keep their images together); at least {MIN_MALIGNANT_PER_PART} "
                                       "are needed")
    validation = classifier.meta.get("calibration", {})
    tta = bool(validation.get("tta", False))
    cfg = classifier.config
    images = cached_images(records, cfg.img_size, progress=progress)
    out = batched_outputs(classifier.outputs, images, cfg, tta=tta)
    site = fit_calibration(out.logits[fit], labels[fit], out.plain_logits[fit], cfg.classes)
    probs_before = softmax_np(out.logits[held], float(validation.get("temperature", 1.0)))
    probs_after = softmax_np(out.logits[held], site.temperature)
    figures = {}
    for target in REFERRAL_TARGETS:
        key = referral_key(target)
        before = validation.get("referral", {}).get(key, {}).get("threshold")
        figures[key] = {
            "before": referral_figures(malignancy_risk(probs_before, cfg.classes), malignant[held], before),
            "after": referral_figures(malignancy_risk(probs_after, cfg.classes), malignant[held],
                                      site.referral[key]["threshold"])}
    counts = {c: int((labels == k).sum()) for k, c in enumerate(CLASSES) if (labels == k).any()}
    now = now or dt.datetime.now(dt.timezone.utc)
    return {"model_sha256": classifier.sha256, "tta": tta, "temperature": site.temperature,
            "confidence_threshold": site.confidence_threshold, "referral": site.referral,
            "provenance": {"date": now.isoformat(timespec="seconds"), "name": name, "n_cases": len(records),
                           "n_fit": len(fit), "n_held_back": len(held), "classes": counts,
                           "malignant_fit": int(malignant[fit].sum()),
                           "malignant_held_back": int(malignant[held].sum()), "seed": seed,
                           "method": "temperature, uncertain and referral thresholds fitted on one half "
                                     "(lesions kept together, malignant share stratified); figures on the other"},
            "held_back": figures}


def activate(site: dict, root=None) -> None:
    """Make `site` the active calibration of its model file (the previous one stays, for rollback)."""
    path = site_path(root)
    with exclusive_lock(path.parent / ".lock"):
        table = copy.deepcopy(read_site(root))
        table.setdefault(site["model_sha256"], []).append(site)
        write_json(site_path(root), table)


def rollback(sha256: str, root=None):
    """Remove the active site calibration of this model file; returns the one now active (None: validation's)."""
    path = site_path(root)
    with exclusive_lock(path.parent / ".lock"):
        table = copy.deepcopy(read_site(root))
        versions = table.get(sha256, [])
        if not versions:
            return None
        versions.pop()
        if not versions:
            table.pop(sha256)
        write_json(site_path(root), table)
    return copy.deepcopy(versions[-1]) if versions else None
