"""CLI: explain one image, or score every method on test-split images.

  python -m core.explain IMAGE --model student --method gradcam [--target mel] --out overlay.png
  python -m core.explain --evaluate --data-dir DIR --split test --n 30 [--models student] [--methods lime] --json xai.json

The evaluation uses the split the shipped models were trained on (recomputed with their seed and
checked against the manifest's split fingerprint) and the HAM10000 lesion masks.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam and lime draw their own bars

import numpy as np  # noqa: E402

from core.classes import CLASSES  # noqa: E402
from core.data.ham10000 import DatasetError  # noqa: E402
from core.data.preprocess import ImageError, load_image  # noqa: E402
from core.explain.heatmaps import METHODS, explain  # noqa: E402
from core.models.checkpoint import CheckpointError  # noqa: E402
from core.models.loader import load_with_counterpart, with_batch_runtime  # noqa: E402

MODELS = ("teacher", "student", "quantized")


def evaluate(data_dir, split_name: str, n: int, models=MODELS, methods=tuple(METHODS), progress=None) -> dict:
    """{model: {method: {energy_in_lesion, lesion_area_fraction, pointing_game, faithfulness, seconds, n}}}."""
    from core.data.ham10000 import find_mask, load_ham10000
    from core.data.split import recompute_split
    from core.explain.scores import lesion_overlap, load_mask, road_faithfulness
    from core.models.loader import read_manifest
    from core.paths import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    records = load_ham10000(data_dir)
    student_entry = read_manifest().get("models", {}).get("student", {})
    seed = int(student_entry.get("seed", 42))
    split = recompute_split(records, seed, student_entry.get("split_fingerprint"))
    chosen = set(split[split_name])
    rng = np.random.default_rng(seed)
    candidates = [r for r in records if r.image_id in chosen and find_mask(data_dir, r.image_id)]
    if not candidates:
        raise DatasetError(f"no {split_name} images with lesion masks below {data_dir}")
    picked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))]
    results = {}
    for model_name in models:
        classifier, counterpart = load_with_counterpart(model_name)
        with_batch_runtime(classifier)  # the app's runtime for perturbed inputs (same maps, tested)
        rows = {m: [] for m in methods}
        for record in picked:
            image = load_image(record.path)
            mask = load_mask(find_mask(data_dir, record.image_id), image.size)
            for method in methods:
                e = explain(classifier, image, method, float_classifier=counterpart)
                target = CLASSES.index(e.target)
                scores = lesion_overlap(e.heatmap, mask)
                scores["faithfulness"] = road_faithfulness(classifier, image, e.heatmap, target)
                scores["seconds"] = e.seconds
                rows[method].append(scores)
                if progress:
                    progress(model_name, method, record.image_id)
        results[model_name] = {
            m: {**{k: float(np.mean([r[k] for r in rs])) for k in rs[0]}, "n": len(rs)} for m, rs in rows.items()
        }
    return results


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
    a = p.parse_args(argv)
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
            result = evaluate(a.data_dir, a.split, a.n, models, methods, progress=lambda *_: bar.update(1))
            bar.close()
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
