"""Choose explanation settings by measurement: faithfulness and lesion overlap on validation images.

`python -m core.explain.search --data-dir DIR [--model student] [--n 12] [--json OUT]`

For each method, every candidate setting is scored on the same validation-split images with lesion
masks (never the test split): lesion overlap (energy in lesion / lesion area, pointing game), ROAD
faithfulness, and seconds. Grad-CAM and Score-CAM try the model's candidate target layers, single and
combined; LIME tries the hidden-superpixel colour (black, image mean, superpixel mean), SLIC segment
count and sample count. The best setting per method maximises pointing game + energy ratio + 10 x ROAD
(the three on comparable scales); ties go to the cheaper setting. The chosen settings then get the
sanity checks of Adebayo et al. (rank correlation with the map of randomised weights and of another class).
"""

import argparse
import itertools
import json
import sys

import numpy as np

from core.classes import CLASSES
from core.data.ham10000 import DatasetError, find_mask, load_ham10000
from core.data.preprocess import load_image
from core.data.split import recompute_split
from core.explain.heatmaps import LIME_HIDE, explain
from core.explain.sanity import sanity_checks
from core.explain.scores import lesion_overlap, load_mask, road_faithfulness
from core.models.loader import load_with_counterpart, read_manifest
from core.paths import resolve_data_dir

SANITY_IMAGES = 6  # Adebayo checks on the chosen settings: randomised weights, another class
LIME_GRID = {"hide": tuple(LIME_HIDE), "n_segments": (30, 50), "num_samples": (300, 600)}


def candidate_settings(hybrid) -> dict:
    """{method: [settings dict, ...]} to try for this model."""
    layers = hybrid.cam_layer_candidates()
    cams = [{"layers": tuple(v)} for v in layers.values()]
    lime = [dict(zip(LIME_GRID, combo)) for combo in itertools.product(*LIME_GRID.values())]
    return {"gradcam": cams, "scorecam": cams, "lime": lime}


def score(row_list) -> dict:
    """Mean metrics of one setting over images, and the selection score."""
    mean = {k: float(np.mean([r[k] for r in row_list])) for k in row_list[0]}
    mean["energy_ratio"] = mean["energy_in_lesion"] / max(mean["lesion_area_fraction"], 1e-9)
    mean["score"] = mean["pointing_game"] + mean["energy_ratio"] + 10 * mean["faithfulness"]
    return mean


def search(data_dir, model="student", n: int = 12, split_name: str = "val", progress=None) -> dict:
    data_dir = resolve_data_dir(data_dir)
    if split_name == "test":
        raise ValueError("settings are chosen on validation images, never on the test split")
    records = load_ham10000(data_dir)
    entry = read_manifest().get("models", {}).get("student", {})
    split = recompute_split(records, int(entry.get("seed", 42)), entry.get("split_fingerprint"))
    chosen = set(split[split_name])
    candidates = [r for r in records if r.image_id in chosen and find_mask(data_dir, r.image_id)]
    if not candidates:
        raise DatasetError(f"no {split_name} images with lesion masks below {data_dir}")
    rng = np.random.default_rng(0)
    picked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))]
    classifier, counterpart = load_with_counterpart(model)
    hybrid = (classifier.module or counterpart.module).model
    results = {}
    for method, settings_list in candidate_settings(hybrid).items():
        rows = []
        for settings in settings_list:
            per_image = []
            for record in picked:
                image = load_image(record.path)
                mask = load_mask(find_mask(data_dir, record.image_id), image.size)
                e = explain(classifier, image, method, float_classifier=counterpart, **settings)
                scores = lesion_overlap(e.heatmap, mask)
                scores["faithfulness"] = road_faithfulness(classifier, image, e.heatmap, CLASSES.index(e.target))
                scores["seconds"] = e.seconds
                per_image.append(scores)
            rows.append({"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                         **score(per_image), "n": len(per_image)})
            if progress:
                progress(method, settings)
        best = max(rows, key=lambda r: (round(r["score"], 3), -r["seconds"]))
        sanity = [sanity_checks(classifier if classifier.module is not None else counterpart,
                                load_image(r.path), method, **best["settings"]) for r in picked[:SANITY_IMAGES]]
        results[method] = {"candidates": rows, "chosen": best["settings"],
                           "sanity": {k: float(np.mean([x[k] for x in sanity])) for k in
                                      ("randomized_weights_rank_corr", "other_class_rank_corr")}}
    return {"model": model, "split": split_name, "n_images": len(picked), "results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.explain.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--model", default="student")
    p.add_argument("--n", type=int, default=12, help="validation images with masks")
    p.add_argument("--json", dest="json_out")
    a = p.parse_args(argv)
    try:
        result = search(a.data_dir, a.model, a.n, progress=lambda m, s: print(f"{m} {s}", file=sys.stderr))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(text)
    for method, r in result["results"].items():
        print(f"\n{method}: chosen {r['chosen']}; rank correlation with randomised weights "
              f"{r['sanity']['randomized_weights_rank_corr']:+.2f}, with another class {r['sanity']['other_class_rank_corr']:+.2f}")
        for row in r["candidates"]:
            print(f"  {json.dumps(row['settings'])}: energy ratio {row['energy_ratio']:.2f}, pointing "
                  f"{row['pointing_game']:.2f}, ROAD {row['faithfulness']:+.3f}, {row['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
