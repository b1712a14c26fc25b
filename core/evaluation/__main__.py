"""CLI: evaluate a model on labelled images.

`python -m core.evaluate --model {teacher,student,quantized,PATH} (--images DIR --labels CSV | --external)
 [--split-file split.json --split test] [--json OUT] [--plots DIR]`

The CSV needs image_id and dx columns (lesion_id optional; HAM10000_metadata.csv qualifies). `--external` is
the external validation set (../shared/data/isic2018_external_val, or $DERMADISTILL_EXTERNAL_DIR). Probabilities
are the model's calibrated ones. The report (core.evaluation.report) has accuracy, balanced accuracy, macro-F1,
macro AUC with bootstrap 95% intervals (lesions resampled where lesion ids exist), per-class figures, the
confusion matrix, ECE and reliability bins, ROC points, the referral flag's sensitivity and specificity at each
stored threshold (`triage`), and the share of images the input gate refuses. `--plots` writes
reliability.png and roc.png.

`--versus MODEL` evaluates a second model on the same images and adds their paired difference (second minus
first) with 95% intervals from the same lesion resamples, for "is B better than A on this set?"; the referral
figures compare each model at its own validation-chosen 90% threshold.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.data.ham10000 import DatasetError, load_external, read_labels
from core.data.preprocess import ImageError
from core.data.split import load_split
from core.evaluation.plots import write_plots
from core.evaluation.report import default_triage, paired_difference, records_report
from core.models.checkpoint import CheckpointError
from core.paths import resolve_external_dir
from core.registry.loader import load_model
from core.registry.predict import add_tta_flag


def json_safe(value):
    """NaN (an undefined metric, e.g. AUC of a class without images) as null: the output stays valid JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def versus_report(names, classifiers, reports, records) -> dict:
    """Both models' reports (without per-image predictions) and the paired difference of the second from the
    first, referral compared at each model's validation-chosen 90% threshold."""
    probs = [np.asarray(r.pop("predictions")["probabilities"]) for r in reports]
    thresholds = tuple(default_triage(r).get("threshold") for r in reports)
    labels = np.array([r.label for r in records])
    groups = np.array([r.lesion_id for r in records])
    difference = paired_difference(labels, probs[0], probs[1], classifiers[0].config.classes, groups, thresholds)
    return {"model": names[0], "versus": names[1], "n": len(records), "reports": dict(zip(names, reports)),
            "difference_versus_minus_model": difference}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--images", help="folder searched recursively for the images")
    p.add_argument("--labels", help="CSV with image_id,dx columns")
    p.add_argument("--external", action="store_true", help="evaluate on the external validation set")
    p.add_argument("--split-file", help="optional split.json: evaluate only one of its splits")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--versus", metavar="MODEL", help="a second model: also report its paired difference from --model")
    p.add_argument("--json", dest="json_out", help="write the report here")
    p.add_argument("--plots", help="folder for reliability.png and roc.png")
    add_tta_flag(p)
    a = p.parse_args(argv)
    if a.external == bool(a.images or a.labels) or (not a.external and not (a.images and a.labels)):
        p.error("give --images and --labels, or --external")
    if a.versus and a.versus == a.model:
        p.error("--versus needs a second model, not --model again")
    if a.versus and a.plots:
        p.error("--plots draws one model's curves: leave out --versus")
    try:
        names = [a.model] + ([a.versus] if a.versus else [])
        classifiers = [load_model(name) for name in names]
        if a.external:
            records = load_external(resolve_external_dir())
        else:
            records = read_labels(a.labels, a.images)
        if a.split_file:
            keep = set(load_split(a.split_file)[a.split])
            records = [r for r in records if r.image_id in keep]
        if not records:
            raise DatasetError("no labelled images to evaluate (is the split file for this data set?)")
        reports = []
        for name, classifier in zip(names, classifiers):
            with tqdm(total=len(records), desc=f"decoding for {name}", file=sys.stderr) as bar:
                reports.append(records_report(classifier, records, tta=a.tta, keep_predictions=bool(a.versus),
                                              progress=lambda done, total: bar.update(done - bar.n)))
    except (DatasetError, CheckpointError, ImageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = reports[0] if not a.versus else versus_report(names, classifiers, reports, records)
    text = json.dumps(json_safe(report), indent=2)
    if a.json_out:
        Path(a.json_out).write_text(text)
    if a.plots:
        for path in write_plots(report, a.plots, a.model):
            print(f"wrote {path}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
