"""CLI: explain one image, or score every method on test-split images.

  python -m core.explain IMAGE --model student --method gradcam [--target mel] --out overlay.png
  python -m core.explain --evaluate --data-dir DIR --split test --n 30 --json xai.json
      [--models student] [--methods lime]

The evaluation uses the split the shipped models were trained on (recomputed with their seed and
checked against the manifest's split fingerprint) and the HAM10000 lesion masks.
"""

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam and lime draw their own bars


from core.classes import CLASSES  # noqa: E402
from core.data.ham10000 import DatasetError  # noqa: E402
from core.data.preprocess import ImageError, load_image  # noqa: E402
from core.explain.heatmaps import METHODS, explain  # noqa: E402
from core.models.checkpoint import CheckpointError  # noqa: E402
from core.explain.chosen import record_measured  # noqa: E402
from core.explain.masked_cases import masked_cases  # noqa: E402
from core.explain.scores import mean_scores  # noqa: E402
from core.registry.loader import load_with_counterpart, shipped_split, with_batch_runtime  # noqa: E402

MODELS = ("teacher", "student", "quantized")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m core.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?")
    p.add_argument("--model", default="student", help="teacher, student, quantized or a checkpoint path")
    p.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    p.add_argument("--target", help="class code to explain (default: predicted class)")
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument("--out", default="overlay.png")
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to score")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--record", action="store_true",
                   help="with --evaluate: store each model file's scores beside its settings (weights/"
                        "explain_settings.json), where the app's map captions read them")
    a = p.parse_args(argv)
    if a.record and (not a.evaluate or a.split == "train"):
        print("error: --record stores scores of --evaluate on held-out images (--split val or test)", file=sys.stderr)
        return 2
    if a.target and a.target not in CLASSES:
        print(f"error: unknown class {a.target!r}; choose from {', '.join(CLASSES)}", file=sys.stderr)
        return 2
    try:
        if a.evaluate:
            from tqdm import tqdm

            models = [m for m in a.models.split(",") if m]
            methods = [m for m in a.methods.split(",") if m]
            unknown = set(methods) - set(METHODS)
            if unknown:
                raise ValueError(f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
            bar = tqdm(total=a.n * len(models) * len(methods), file=sys.stderr, disable=False, desc="explaining")
            cases = masked_cases(a.data_dir, a.split, a.n, *shipped_split())
            pairs = {name: load_with_counterpart(name) for name in models}
            for classifier, _ in pairs.values():
                with_batch_runtime(classifier)  # the app's runtime for perturbed inputs (same maps, tested)
            result = mean_scores(pairs, cases, methods, progress=lambda *_: bar.update(1))
            bar.close()
            if a.record:
                command = "python -m core.explain " + " ".join(argv if argv is not None else sys.argv[1:])
                for name, (classifier, _) in pairs.items():
                    record_measured(classifier.sha256, result[name], {
                        "split": a.split, "command": command, "date": dt.date.today().isoformat()})
            text = json.dumps(result, indent=2)
            if a.json_out:
                Path(a.json_out).write_text(text)
            print(text)
            return 0
        if not a.image:
            p.error("IMAGE is required unless --evaluate is given")
        classifier, counterpart = load_with_counterpart(a.model)
        image = load_image(a.image)
        e = explain(classifier, image, a.method, target=a.target, opacity=a.opacity, float_classifier=counterpart)
    except (ImageError, DatasetError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    e.overlay.save(a.out)
    print(json.dumps({"image": a.image, "model": e.model, "method": e.method, "target": e.target,
                      "seconds": round(e.seconds, 3), "settings": e.settings, "notes": e.notes, "out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
