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
"""

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from core.data.ham10000 import DatasetError, load_external, read_labels
from core.data.preprocess import ImageError
from core.evaluation.report import records_report
from core.models.checkpoint import CheckpointError
from core.paths import resolve_external_dir


def json_safe(value):
    """NaN (an undefined metric, e.g. AUC of a class without images) as null: the output stays valid JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_plots(report: dict, folder, title: str) -> list:
    """reliability.png (accuracy against confidence, with ECE) and roc.png (one-vs-rest, AUC per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = report["reliability"]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / 15, edgecolor="k",
           alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="calibrated confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}: ECE {report['ece']:.3f}, n = {report['n']}")
    ax.legend(loc="upper left")
    fig.savefig(folder / "reliability.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for c, curve in report["roc"].items():
        ax.plot(curve["fpr"], curve["tpr"], label=f"{c} (AUC {auc(curve['fpr'], curve['tpr']):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC (thinned curves)")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(folder / "roc.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [folder / "reliability.png", folder / "roc.png"]


def main(argv=None) -> int:
    from core.data.split import load_split
    from core.models.loader import load_model
    from core.predict import add_tta_flag

    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--images", help="folder searched recursively for the images")
    p.add_argument("--labels", help="CSV with image_id,dx columns")
    p.add_argument("--external", action="store_true", help="evaluate on the external validation set")
    p.add_argument("--split-file", help="optional split.json: evaluate only one of its splits")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--json", dest="json_out", help="write the report here")
    p.add_argument("--plots", help="folder for reliability.png and roc.png")
    add_tta_flag(p)
    a = p.parse_args(argv)
    if a.external == bool(a.images or a.labels) or (not a.external and not (a.images and a.labels)):
        p.error("give --images and --labels, or --external")
    try:
        classifier = load_model(a.model)
        if a.external:
            records = load_external(resolve_external_dir())
        else:
            records = read_labels(a.labels, a.images)
        if a.split_file:
            keep = set(load_split(a.split_file)[a.split])
            records = [r for r in records if r.image_id in keep]
        if not records:
            raise DatasetError("no labelled images to evaluate (is the split file for this data set?)")
        with tqdm(total=len(records), desc=f"decoding for {a.model}", file=sys.stderr) as bar:
            report = records_report(classifier, records, tta=a.tta,
                                    progress=lambda done, total: bar.update(done - bar.n))
    except (DatasetError, CheckpointError, ImageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
