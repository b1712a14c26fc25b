"""Prediction with calibrated confidence, an honest `uncertain` answer, a gate for images that are not
dermoscopic lesion images, and a referral flag at a validated sensitivity (CLI: `python -m core.predict`).

Not dermoscopic (no diagnosis is given): colour statistics no dermoscopic image has (a uniform channel,
no texture, colours unlike skin), or a fused feature far from every training class (Mahalanobis distance
beyond the validation threshold, see core.evaluation.ood).
Uncertain: calibrated top probability under the model's validation-chosen threshold, or an energy score
beyond the validation 99th percentile (see core.evaluation.calibration).
Referral: malignancy risk (calibrated P(mel) + P(bcc) + P(akiec)) at or above the threshold chosen on
validation for the target sensitivity; shown whatever the top class, also when the answer is uncertain.
"""

import argparse
import os
from dataclasses import asdict, dataclass, field

from core.classes import FULL_NAMES, SUSPICIOUS
from core.data.preprocess import low_resolution_warning, preprocess
from core.evaluation.calibration import REFERRAL_TARGETS, energy_score, malignancy_risk, referral_key, softmax_np
from core.evaluation.inference import calibration_for
from core.evaluation.ood import NOT_DERMOSCOPIC, dermoscopy_check

REFERRAL_ENV = "DERMADISTILL_REFERRAL_SENSITIVITY"


def referral_target(value=None) -> float:
    """The deployer's target sensitivity: `value`, else $DERMADISTILL_REFERRAL_SENSITIVITY, else 0.90;
    only the validated points in REFERRAL_TARGETS are accepted."""
    raw = value if value is not None else os.environ.get(REFERRAL_ENV, REFERRAL_TARGETS[0])
    try:
        target = float(raw)
    except ValueError:
        target = None
    if target not in REFERRAL_TARGETS:
        raise ValueError(f"referral sensitivity {raw!r} is not one of the validated points "
                         f"{', '.join(referral_key(t) for t in REFERRAL_TARGETS)}")
    return target


@dataclass
class Prediction:
    label: str
    full_name: str
    confidence: float  # calibrated top probability
    probabilities: dict  # class -> calibrated probability, in class order
    suspicious: bool  # top class is mel / bcc / akiec
    uncertain: bool
    dermoscopic: bool = True  # False: no diagnosis is given (the output is shown only on request)
    malignancy_risk: float = float("nan")  # calibrated P(mel) + P(bcc) + P(akiec)
    referral: bool = None  # risk at or above the validated threshold; None: no validated threshold
    referral_threshold: float = float("nan")
    referral_target: float = float("nan")  # the validation sensitivity the threshold was chosen for
    referral_val_sensitivity: float = float("nan")
    referral_val_specificity: float = float("nan")
    reasons: list = field(default_factory=list)  # why uncertain / not dermoscopic
    warnings: list = field(default_factory=list)  # e.g. low resolution
    model: dict = field(default_factory=dict)  # the answering model's identity (Classifier.identity)

    def top(self, k: int = 3) -> list:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def referral_text(self) -> str:
        """The referral line in plain words: above the threshold, or what being below it does (not) mean
        (empty when there is no validated threshold or no diagnosis)."""
        if not self.dermoscopic:
            return ""
        if self.referral is None:  # this model file has no validated threshold
            return ("Top class is malignant or pre-malignant: consider referral. (This model has no validated "
                    "referral threshold.)" if self.suspicious else "")
        catches = f"{self.referral_val_sensitivity * 10:.1f}".rstrip("0").rstrip(".")
        if self.referral:
            return (f"Refer: malignancy risk {self.malignancy_risk:.0%} - above the threshold "
                    f"({self.referral_threshold:.0%}) that catches {catches} in 10 malignant lesions in validation.")
        missed = f"{(1 - self.referral_val_sensitivity) * 10:.1f}".rstrip("0").rstrip(".")
        return (f"Malignancy risk {self.malignancy_risk:.0%}, below the referral threshold "
                f"({self.referral_threshold:.0%}). In validation about {missed} in 10 malignant lesions also scored "
                "below it: this is not a sign that the lesion is benign. Refer on clinical grounds "
                "(history, change, symptoms, your own examination).")

    def to_dict(self, show_anyway: bool = False) -> dict:
        """JSON-ready; for an image that is not dermoscopic the diagnosis is left out unless `show_anyway`,
        and then marked as shown on request."""
        d = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(self).items()}  # NaN -> null
        if not self.dermoscopic:
            if show_anyway:
                d["shown_on_request"] = True
            else:
                for key in ("label", "full_name", "confidence", "probabilities", "suspicious", "malignancy_risk",
                            "referral"):
                    d[key] = None
        return d


def unlike_training(model, image, outputs=None) -> bool:
    """Does `model`'s feature-distance test refuse `image`? (`outputs`: its plain-view outputs, if computed.)
    False for no model or a model file without a test."""
    if model is None or model.feature_distance is None:
        return False
    if outputs is None:
        cfg = model.config
        outputs = model.predict_outputs(preprocess(image, cfg))
    return outputs.features is not None and bool(model.feature_distance.unlike_training(outputs.features.numpy())[0])


def predict_image(classifier, image, tta=None, referral_sensitivity=None) -> Prediction:
    """One PIL image (already loaded) -> Prediction, using the classifier's stored calibration.

    `tta`: dihedral test-time augmentation on/off; None uses the mode chosen on validation.
    `referral_sensitivity`: one of REFERRAL_TARGETS; None reads the deployer's setting (`referral_target`).
    """
    x = preprocess(image, classifier.config)
    cal = calibration_for(classifier.calibration, tta)
    out = classifier.predict_outputs(x, tta=bool(cal.get("tta", False)))
    t = float(cal.get("temperature", 1.0))
    classes = classifier.config.classes
    probs = softmax_np(out.logits.float().numpy(), t)[0]
    k = int(probs.argmax())
    reasons = dermoscopy_check(image)
    if any(unlike_training(model, image, own) for model, own in ((classifier, out), (classifier.gate, None))):
        reasons.append(f"{NOT_DERMOSCOPIC}: the model's features are far from every lesion it was trained on "
                       "(if this is a dermoscopic lesion image, the model cannot assess it: assess it clinically)")
    dermoscopic = not reasons
    threshold = float(cal.get("confidence_threshold", 0.0))
    if probs[k] < threshold:
        reasons.append(f"low confidence ({probs[k]:.0%} < {threshold:.0%} threshold chosen on validation)")
    # files calibrated before energy_view existed fitted the energy threshold on the probability logits
    energy_logits = out.plain_logits if cal.get("energy_view") == "plain" else out.logits
    energy = float(energy_score(energy_logits.float().numpy(), t)[0])
    if energy > float(cal.get("energy_threshold", float("inf"))):
        reasons.append("the image is unlike the training images (energy score out of range)")
    warnings = [w for w in [low_resolution_warning(image)] if w]
    if classifier.feature_distance is None:
        warnings.append("this model file has no feature-distance test: only colour statistics check the input")
    target = referral_target(referral_sensitivity)
    point = cal.get("referral", {}).get(referral_key(target))
    if point is not None and point.get("threshold") is None:
        point = None
    risk = float(malignancy_risk(probs[None], classes)[0])
    referral = {} if point is None else {
        "referral_threshold": float(point["threshold"]), "referral_target": target,
        "referral_val_sensitivity": float(point["val_sensitivity"]),
        "referral_val_specificity": float(point["val_specificity"]),
        "referral": dermoscopic and risk >= float(point["threshold"])}
    if point is None:
        warnings.append("this model file has no validated referral threshold: no referral advice is given")
    return Prediction(
        label=classes[k], full_name=FULL_NAMES[classes[k]], confidence=float(probs[k]),
        probabilities={c: float(p) for c, p in zip(classes, probs)},
        suspicious=classes[k] in SUSPICIOUS, uncertain=bool(reasons), dermoscopic=dermoscopic,
        malignancy_risk=risk, reasons=reasons, warnings=warnings, model=classifier.identity, **referral,
    )


def add_tta_flag(parser) -> None:
    """--tta / --no-tta for the CLIs; unset means the mode the model's validation chose."""
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="dihedral test-time augmentation (8 views); default: as chosen on validation")
