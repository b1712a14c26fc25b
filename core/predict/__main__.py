"""CLI: classify dermoscopic images with the calibrated answer, input gate and referral flag.

`python -m core.predict IMAGE [IMAGE ...] [--model student] [--json] [--referral-sensitivity 0.95] [--show-anyway]`
"""

import argparse
import json
import sys

from core.classes import CLASSES
from core.data.preprocess import ImageError, load_image
from core.evaluation.calibration import REFERRAL_TARGETS
from core.registry.loader import load_model
from core.registry.predict import REFERRAL_ENV, add_tta_flag, predict_image, referral_target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.predict", description="Classify dermoscopic images.")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--referral-sensitivity", type=float, default=None,
                   help=f"validated target sensitivity of the referral flag ({', '.join(map(str, REFERRAL_TARGETS))}; "
                        f"default ${REFERRAL_ENV} or {REFERRAL_TARGETS[0]})")
    p.add_argument("--show-anyway", action="store_true",
                   help="also give the model's output for images that are not dermoscopic (marked as such)")
    add_tta_flag(p)
    a = p.parse_args(argv)
    try:
        referral_target(a.referral_sensitivity)
        classifier = load_model(a.model)
    except ValueError as exc:  # CheckpointError is a ValueError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in classifier.warnings:
        print(f"warning: {w}", file=sys.stderr)
    failed = 0
    for path in a.images:
        try:
            pred = predict_image(classifier, load_image(path), tta=a.tta, referral_sensitivity=a.referral_sensitivity)
        except ImageError as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        if a.json:
            print(json.dumps({"image": path, **pred.to_dict(show_anyway=a.show_anyway)}))
            continue
        if not pred.dermoscopic:
            print(f"{path}: NOT A DERMOSCOPIC LESION IMAGE: no diagnosis given; please use a dermoscopic image"
                  + (" (model output below shown on request)" if a.show_anyway else ""))
        if pred.dermoscopic or a.show_anyway:
            flag = "UNCERTAIN" if pred.uncertain else ""
            probs = " ".join(f"{c}={pred.probabilities[c]:.3f}" for c in CLASSES)
            print(f"{path}: {pred.label} ({pred.full_name}) {pred.confidence:.1%} {flag}".rstrip())
            print(f"  {probs}")
        if pred.referral_text():
            print(f"  {pred.referral_text()}")
        for reason in pred.reasons + pred.warnings:
            print(f"  note: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
