"""Prediction with calibrated confidence and an honest `uncertain` answer; also a CLI.

`python -m core.predict IMAGE [IMAGE ...] [--model student] [--json]`

An image is `uncertain` when it does not look like a dermoscopic image (nearly uniform, or colours
unlike skin), when its calibrated top probability is under the model's validation-chosen threshold,
or when its energy score is beyond the validation 99th percentile (see core.evaluation.calibration).
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from core.classes import CLASSES, FULL_NAMES, SUSPICIOUS
from core.data.preprocess import ImageError, load_image, low_resolution_warning, preprocess
from core.evaluation.calibration import energy_score, softmax_np
from core.evaluation.inference import calibration_for

NOT_DERMOSCOPIC = "does not look like a dermoscopic image"


@dataclass
class Prediction:
    label: str
    full_name: str
    confidence: float  # calibrated top probability
    probabilities: dict  # class -> calibrated probability, in class order
    suspicious: bool  # mel / bcc / akiec: consider referral or biopsy
    uncertain: bool
    reasons: list = field(default_factory=list)  # why uncertain
    warnings: list = field(default_factory=list)  # e.g. low resolution

    def top(self, k: int = 3) -> list:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict:
        return asdict(self)


def dermoscopy_check(image) -> list:
    """Reasons an image does not look dermoscopic (empty list when it plausibly does).

    Cheap colour statistics that HAM10000 images pass: enough contrast, and most pixels in the
    skin-tone range (red channel not below blue and green), which rejects blank images, screenshots,
    sky, foliage and the like.
    """
    arr = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
    reasons = []
    if arr.std() < 6.0:
        reasons.append(f"{NOT_DERMOSCOPIC}: the image is nearly uniform")
        return reasons
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    skin_like = ((r + 8 >= g) & (r + 8 >= b)).mean()
    if skin_like < 0.6:
        reasons.append(f"{NOT_DERMOSCOPIC}: colours unlike skin ({skin_like:.0%} skin-toned pixels)")
    return reasons


def predict_image(classifier, image, tta=None) -> Prediction:
    """One PIL image (already loaded) -> Prediction, using the classifier's stored calibration.

    `tta`: dihedral test-time augmentation on/off; None uses the mode chosen on validation.
    """
    x = preprocess(image, classifier.config.img_size, classifier.config.mean, classifier.config.std)
    cal = calibration_for(classifier.calibration, tta)
    logits = classifier.predict_logits(x, tta=bool(cal.get("tta", False))).float().numpy()
    t = float(cal.get("temperature", 1.0))
    probs = softmax_np(logits, t)[0]
    k = int(probs.argmax())
    reasons = dermoscopy_check(image)
    threshold = float(cal.get("confidence_threshold", 0.0))
    if probs[k] < threshold:
        reasons.append(f"low confidence ({probs[k]:.0%} < {threshold:.0%} threshold chosen on validation)")
    energy = float(energy_score(logits, t)[0])
    if energy > float(cal.get("energy_threshold", float("inf"))):
        reasons.append("the image is unlike the training images (energy score out of range)")
    warn = low_resolution_warning(image)
    classes = classifier.config.classes
    return Prediction(
        label=classes[k], full_name=FULL_NAMES[classes[k]], confidence=float(probs[k]),
        probabilities={c: float(p) for c, p in zip(classes, probs)},
        suspicious=classes[k] in SUSPICIOUS, uncertain=bool(reasons), reasons=reasons,
        warnings=[warn] if warn else [],
    )


def add_tta_flag(parser) -> None:
    """--tta / --no-tta for the CLIs; unset means the mode the model's validation chose."""
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="dihedral test-time augmentation (8 views); default: as chosen on validation")


def main(argv=None) -> int:
    from core.models.checkpoint import CheckpointError
    from core.models.loader import load_model

    p = argparse.ArgumentParser(prog="python -m core.predict", description="Classify dermoscopic images.")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_tta_flag(p)
    a = p.parse_args(argv)
    try:
        classifier = load_model(a.model)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in classifier.warnings:
        print(f"warning: {w}", file=sys.stderr)
    failed = 0
    for path in a.images:
        try:
            pred = predict_image(classifier, load_image(path), tta=a.tta)
        except ImageError as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        if a.json:
            print(json.dumps({"image": path, **pred.to_dict()}))
        else:
            flag = "UNCERTAIN" if pred.uncertain else ("suspicious: consider referral/biopsy" if pred.suspicious else "")
            probs = " ".join(f"{c}={pred.probabilities[c]:.3f}" for c in CLASSES)
            print(f"{path}: {pred.label} ({pred.full_name}) {pred.confidence:.1%} {flag}".rstrip())
            print(f"  {probs}")
            for reason in pred.reasons + pred.warnings:
                print(f"  note: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
