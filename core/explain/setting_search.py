"""Choose explanation settings by measurement: faithfulness and lesion overlap on validation images
(CLI: `python -m core.explain.search`).

For each method, every candidate setting is scored on the same validation-split images with lesion
masks (never the test split): lesion overlap (energy in lesion / lesion area, pointing game), ROAD
faithfulness, and seconds. Grad-CAM and Score-CAM try the model's candidate target layers, single and
combined; LIME tries what a hidden superpixel becomes (black, image mean, superpixel mean, a blurred
copy) and the SLIC segment count, then the sample count for the best of those. The best setting per
method maximises pointing game + energy ratio + 10 x ROAD (the three on comparable scales); ties go to
the cheaper setting, and a setting must pass the sanity check of Adebayo et al.: its map's rank
correlation with the map of the same architecture with randomised weights at most 0.3 (settings are
checked in score order; the correlation with another class's map is reported too). The choice is
recorded for this model file (core.explain.chosen), where `explain` takes it as its default.
"""

import itertools
import os
from datetime import date

os.environ.setdefault("TQDM_DISABLE", "1")  # lime draws its own bar per explanation

import numpy as np  # noqa: E402

from core.explain.chosen import record_chosen
from core.explain.heatmaps import LIME_HIDE, explain
from core.explain.sanity import sanity_checks
from core.explain.scores import explanation_scores

SANITY_IMAGES = 6  # Adebayo checks on the chosen settings: randomised weights, another class
SANITY_LIMIT = 0.3  # |rank correlation| with the randomised-weights map above this: the map shows the image
LIME_GRID = {"hide": tuple(LIME_HIDE), "n_segments": (30, 50)}  # compared at LIME_SAMPLES samples
LIME_SAMPLES = 300
LIME_SAMPLE_COUNTS = (150, 600)  # then tried with the best colour and segment count


def candidate_stages(hybrid) -> dict:
    """{method: [stage, ...]}: a stage maps the best settings so far (None at first) to the settings to try.
    LIME's sample count is searched after its colour and segment count: the full grid would cost 3x more."""
    cams = [{"layers": tuple(v)} for v in hybrid.cam_layer_candidates().values()]
    lime = [{**dict(zip(LIME_GRID, combo)), "num_samples": LIME_SAMPLES}
            for combo in itertools.product(*LIME_GRID.values())]
    return {"gradcam": [lambda best: cams], "scorecam": [lambda best: cams],
            "lime": [lambda best: lime, lambda best: [{**best, "num_samples": k} for k in LIME_SAMPLE_COUNTS]]}


def score(row_list) -> dict:
    """Mean metrics of one setting over images, and the selection score."""
    mean = {k: float(np.mean([r[k] for r in row_list])) for k in row_list[0]}
    mean["energy_ratio"] = mean["energy_in_lesion"] / max(mean["lesion_area_fraction"], 1e-9)
    mean["score"] = mean["pointing_game"] + mean["energy_ratio"] + 10 * mean["faithfulness"]
    return mean


def score_setting(classifier, counterpart, method, settings, cases) -> dict:
    """One candidate setting's mean lesion overlap, ROAD faithfulness and seconds over the masked cases."""
    per_image = [explanation_scores(classifier, c.image, c.mask,
                                    explain(classifier, c.image, method, float_classifier=counterpart, **settings))
                 for c in cases]
    return {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
            **score(per_image), "n": len(per_image)}


def by_score(row) -> tuple:
    return round(row["score"], 3), -row["seconds"]


def choose_sane(rows, classifier, counterpart, method, cases) -> dict:
    """The best-scoring setting whose map passes the randomised-weights check, with its sanity numbers
    (settings are checked in score order until one passes; if none does, the best one, flagged)."""
    torch_classifier = classifier if classifier.module is not None else counterpart
    checked = []
    for row in sorted(rows, key=by_score, reverse=True):
        sanity = [sanity_checks(torch_classifier, c.image, method, **row["settings"]) for c in cases[:SANITY_IMAGES]]
        summary = {k: float(np.mean([x[k] for x in sanity])) for k in
                   ("randomized_weights_rank_corr", "other_class_rank_corr")}
        checked.append({"settings": row["settings"], **summary})
        if abs(summary["randomized_weights_rank_corr"]) <= SANITY_LIMIT:
            return {"chosen": row["settings"], "sanity": summary, "sanity_checked": checked, "passed": True}
    best = checked[0]
    return {"chosen": best["settings"], "sanity": best, "sanity_checked": checked, "passed": False}


def search(classifier, counterpart, cases, split_name: str, model: str, progress=None, methods=None) -> dict:
    """Score every candidate setting of `methods` (default: all) on the masked `cases` of `split_name`.

    Give `classifier` the app's runtime for perturbed inputs (registry's `with_batch_runtime`), so the
    seconds are the app's."""
    if split_name == "test":
        raise ValueError("settings are chosen on validation images, never on the test split")
    hybrid = (classifier.module or counterpart.module).model
    results = {}
    for method, stages in candidate_stages(hybrid).items():
        if methods and method not in methods:
            continue
        rows, best = [], None
        for stage in stages:
            for settings in stage(best):
                rows.append(score_setting(classifier, counterpart, method, settings, cases))
                if progress:
                    progress(method, settings)
            best = max(rows, key=by_score)["settings"]
        results[method] = {"candidates": rows, **choose_sane(rows, classifier, counterpart, method, cases)}
    return {"model": model, "sha256": classifier.sha256, "split": split_name, "n_images": len(cases),
            "results": results}


def record(result: dict, command: str) -> None:
    """Make the chosen settings the defaults of this model file."""
    split = {"val": "validation", "train": "training"}.get(result["split"], result["split"])
    summary = (f"chosen by core.explain.search on {result['n_images']} {split} images "
               f"({date.today().isoformat()})")
    record_chosen(result["sha256"], {m: r["chosen"] for m, r in result["results"].items()},
                  {"summary": summary, "command": command, "model": result["model"], "split": result["split"],
                   "n_images": result["n_images"], "date": date.today().isoformat()})
