"""Quality scores of a heatmap: faithfulness (ROAD, from pytorch-grad-cam) and lesion overlap.

Lesion overlap uses the HAM10000 segmentation masks (lesion where value >= 128):
- energy_in_lesion: share of heatmap energy inside the lesion (energy-based pointing game, Wang et
  al. 2020); compare with lesion_area_fraction, the share a uniform heatmap would get;
- pointing_game: 1 when the heatmap's maximum lies inside the lesion.
"""

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from core.data.preprocess import preprocess
from core.explain.heatmaps import explain

ROAD_PERCENTILES = (20, 40, 60, 80)


def load_mask(path, size=None) -> np.ndarray:
    """Boolean lesion mask (value >= 128), optionally resized (nearest) to (width, height)."""
    mask = Image.open(path).convert("L")
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.NEAREST)
    return np.asarray(mask) >= 128


def lesion_overlap(heatmap: np.ndarray, mask: np.ndarray) -> dict:
    """energy_in_lesion, lesion_area_fraction and pointing_game for one heatmap/mask pair."""
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ in shape")
    heat = np.clip(heatmap.astype(np.float64), 0, None)
    total = heat.sum()
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    return {
        "energy_in_lesion": float((heat * mask).sum() / total) if total > 0 else 0.0,
        "lesion_area_fraction": float(mask.mean()),
        "pointing_game": float(mask[peak]) if total > 0 else 0.0,
    }


class ClassifierModule(torch.nn.Module):
    """Any loaded classifier as a torch module (for metrics that call model(x))."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier.logits(x)


def road_faithfulness(classifier, image: Image.Image, heatmap: np.ndarray, target: int) -> float:
    """ROAD combined score (LeRF - MoRF confidence, averaged over percentiles): higher is more faithful."""
    cfg = classifier.config
    x = preprocess(image, cfg)
    cam = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize((cfg.img_size, cfg.img_size)))
    metric = ROADCombined(percentiles=list(ROAD_PERCENTILES))
    with torch.no_grad():
        score = metric(x, cam[None], [ClassifierOutputSoftmaxTarget(target)], ClassifierModule(classifier))
    return float(np.asarray(score).reshape(-1)[0])


def explanation_scores(classifier, image: Image.Image, mask: np.ndarray, explanation) -> dict:
    """Lesion overlap, ROAD faithfulness (for the explained class) and seconds of one explanation."""
    scores = lesion_overlap(explanation.heatmap, mask)
    target = list(classifier.config.classes).index(explanation.target)
    scores["faithfulness"] = road_faithfulness(classifier, image, explanation.heatmap, target)
    scores["seconds"] = explanation.seconds
    return scores


def mean_scores(pairs: dict, cases, methods, progress=None) -> dict:
    """{model: {method: {energy_in_lesion, lesion_area_fraction, pointing_game, faithfulness, seconds, n}}}:
    each method's scores averaged over the masked cases, for `pairs` {name: (classifier, float counterpart)}."""
    results = {}
    for model_name, (classifier, counterpart) in pairs.items():
        rows = {m: [] for m in methods}
        for case in cases:
            for method in methods:
                e = explain(classifier, case.image, method, float_classifier=counterpart)
                rows[method].append(explanation_scores(classifier, case.image, case.mask, e))
                if progress:
                    progress(model_name, method, case.image_id)
        results[model_name] = {
            m: {**{k: float(np.mean([r[k] for r in rs])) for k in rs[0]}, "n": len(rs)} for m, rs in rows.items()
        }
    return results
