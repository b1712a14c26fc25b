"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018).

A map that barely changes when the model's weights are replaced by random ones, or when another
class is explained, shows the image rather than the model's reasoning. Both are measured as the
Spearman rank correlation between the two maps (1: same ranking of pixels).
"""

import numpy as np
import torch
from scipy.stats import spearmanr

from core.explain.heatmaps import explain
from core.models.factory import create_model
from core.models.fusion import LogitsOnly


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant map ranks nothing
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomized_copy(classifier, seed: int = 0):
    """The same architecture and preprocessing with freshly initialised weights (torch models only)."""
    import dataclasses

    torch.manual_seed(seed)
    module = LogitsOnly(create_model(classifier.config)).eval()
    return dataclasses.replace(classifier, name=f"{classifier.name} (random weights)", module=module,
                               session=None, batch_session=None)


def sanity_checks(classifier, image, method: str, other_class=None, **settings) -> dict:
    """Rank correlations of the map with the randomised-weights map and with another class's map."""
    if classifier.module is None:
        raise ValueError("sanity checks need a torch model (the int8 model's maps come from its fp32 counterpart)")
    trained = explain(classifier, image, method, **settings)
    randomized = explain(randomized_copy(classifier), image, method, target=trained.target, **settings)
    target = list(classifier.config.classes).index(trained.target)
    other = other_class if other_class is not None else (target + 1) % len(classifier.config.classes)
    other_map = explain(classifier, image, method, target=other, **settings)
    return {"randomized_weights_rank_corr": rank_correlation(trained.heatmap, randomized.heatmap),
            "other_class_rank_corr": rank_correlation(trained.heatmap, other_map.heatmap),
            "target": trained.target, "other_class": classifier.config.classes[other]}
