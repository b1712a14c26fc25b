"""CLI: evaluate a model on labelled images.

`python -m core.evaluate --model {teacher,student,quantized,PATH} --images DIR --labels CSV [--json OUT] [--split-file split.json --split test]`

The CSV needs image_id and dx columns (HAM10000_metadata.csv qualifies). Probabilities are the
model's calibrated ones (temperature scaling does not change the argmax, so accuracy is unaffected).
"""

import argparse
import json
import sys

import numpy as np
import torch
from tqdm import tqdm

from core.data.ham10000 import DatasetError, read_labels
from core.data.preprocess import ImageError, load_image, resize_uint8, to_model_tensor
from core.evaluation.calibration import softmax_np
from core.evaluation.inference import calibration_for
from core.evaluation.metrics import classification_metrics
from core.models.checkpoint import CheckpointError

SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")


def evaluate_records(classifier, records, batch_size: int = 64, progress=None, tta=None) -> dict:
    """Metrics (schema of core.evaluation.metrics) of `classifier` on `records`; `tta` None uses the
    inference mode chosen on validation."""
    cfg = classifier.config
    calibration = calibration_for(classifier.calibration, tta)
    logits = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        arr = np.stack([resize_uint8(load_image(r.path), cfg.img_size) for r in chunk])
        x = to_model_tensor(torch.from_numpy(arr), cfg.mean, cfg.std)
        logits.append(classifier.predict_logits(x, tta=bool(calibration.get("tta", False))).float().numpy())
        if progress:
            progress(len(chunk))
    probs = softmax_np(np.concatenate(logits), float(calibration.get("temperature", 1.0)))
    return {**classification_metrics([r.label for r in records], probs, cfg.classes),
            "tta": bool(calibration.get("tta", False))}


def main(argv=None) -> int:
    from core.data.split import load_split
    from core.models.loader import load_model
    from core.predict import add_tta_flag

    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--images", required=True, help="folder searched recursively for the images")
    p.add_argument("--labels", required=True, help="CSV with image_id,dx columns")
    p.add_argument("--split-file", help="optional split.json: evaluate only one of its splits")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--json", dest="json_out", help="write the metrics here")
    add_tta_flag(p)
    a = p.parse_args(argv)
    try:
        classifier = load_model(a.model)
        records = read_labels(a.labels, a.images)
        if a.split_file:
            keep = set(load_split(a.split_file)[a.split])
            records = [r for r in records if r.image_id in keep]
        with tqdm(total=len(records), desc=f"evaluating {a.model}", file=sys.stderr) as bar:
            metrics = evaluate_records(classifier, records, progress=bar.update, tta=a.tta)
    except (DatasetError, CheckpointError, ImageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=2)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
