"""Held-out HAM10000 images with their reference lesion masks: the cases on which explanations are scored
(`core.explain --evaluate`) and their settings chosen (`core.explain.search`).

The split is the one the shipped models were trained on, recomputed with their seed and checked against
the manifest's split fingerprint; cases are drawn at random, reproducibly, among the images with a mask.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.data.ham10000 import DatasetError, find_mask, load_ham10000
from core.data.preprocess import load_image
from core.data.split import recompute_split
from core.explain.scores import load_mask
from core.paths import resolve_data_dir


@dataclass
class MaskedCase:
    image_id: str
    image: Image.Image
    mask: np.ndarray  # boolean, at the image's size


def masked_cases(data_dir, split_name: str, n: int, split_seed: int, split_fingerprint=None,
                 sample_seed: int = None) -> list:
    """`n` images of `split_name` with lesion masks, decoded once (sample_seed None: the split's seed).

    The split is recomputed from `split_seed` and checked against `split_fingerprint` (the shipped
    models' split: `core.registry.loader.shipped_split()`)."""
    data_dir = resolve_data_dir(data_dir)
    records = load_ham10000(data_dir)
    split = recompute_split(records, split_seed, split_fingerprint)
    chosen = set(split[split_name])
    candidates = [r for r in records if r.image_id in chosen and find_mask(data_dir, r.image_id)]
    if not candidates:
        raise DatasetError(f"no {split_name} images with lesion masks below {data_dir}")
    rng = np.random.default_rng(split_seed if sample_seed is None else sample_seed)
    picked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))]
    cases = []
    for record in picked:
        image = load_image(record.path)
        cases.append(MaskedCase(record.image_id, image, load_mask(find_mask(data_dir, record.image_id), image.size)))
    return cases
