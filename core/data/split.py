"""Lesion-grouped, class-stratified train/val/test split, deterministic from a seed.

All images of one lesion (and byte-identical copies across lesions) land in one split, so no test
lesion is ever seen in training. Oversampling happens later, inside the training split only.
"""

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from core.data.ham10000 import DatasetError, content_duplicate_groups


def _group_ids(records, duplicate_of) -> list:
    """Group key per record: its lesion, merged with the lesion of any byte-identical image."""
    lesion_of = {r.image_id: r.lesion_id for r in records}
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for image_id, original in duplicate_of.items():
        a, b = find(lesion_of[image_id]), find(lesion_of[original])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(r.lesion_id) for r in records]


def lesion_grouped_split(records, seed: int = 42, val_fraction: float = 0.15, test_fraction: float = 0.15,
                         duplicate_of=None) -> dict:
    """{"train", "val", "test": [image_id, ...], "seed"} with no lesion group in two splits.

    Uses StratifiedGroupKFold twice: first carve test, then val from the rest, so class
    proportions are kept approximately in every split.
    """
    records = list(records)
    groups = _group_ids(records, duplicate_of or {})
    labels = [r.dx for r in records]

    def carve(indices, fraction, fold_seed):
        sub_labels = [labels[i] for i in indices]
        largest_class = max(Counter(sub_labels).values())
        n_splits = max(2, min(round(1 / fraction), largest_class))  # tiny data sets: fewer, larger folds
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=fold_seed)
        sub_groups = [groups[i] for i in indices]
        with warnings.catch_warnings():  # rare classes with fewer members than folds are expected
            warnings.simplefilter("ignore", UserWarning)
            rest, held = next(sgkf.split(indices, sub_labels, sub_groups))
        return [indices[i] for i in rest], [indices[i] for i in held]

    all_idx = list(range(len(records)))
    rest, test = carve(all_idx, test_fraction, seed)
    train, val = carve(rest, val_fraction / (1 - test_fraction), seed + 1)
    ids = lambda idx: sorted(records[i].image_id for i in idx)  # noqa: E731
    return {"train": ids(train), "val": ids(val), "test": ids(test), "seed": seed}


def split_indices(records, split: dict) -> dict:
    """{"train", "val", "test": int64 array of positions in `records`} (ids absent from records skipped)."""
    index_of = {r.image_id: i for i, r in enumerate(records)}
    return {k: np.array([index_of[i] for i in split[k] if i in index_of], dtype=np.int64)
            for k in ("train", "val", "test")}


def split_fingerprint(split: dict) -> str:
    """sha256 of the split's canonical JSON: names the exact test set behind a metric."""
    canonical = json.dumps({k: split[k] for k in ("train", "val", "test", "seed")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def save_split(split: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(split))


def load_split(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def recompute_split(records, seed: int, expected_fingerprint: str = None) -> dict:
    """The lesion-grouped split of `records` rebuilt from its seed (deterministic), checked against the
    fingerprint a release recorded, so that held-out images are really held out."""
    split = lesion_grouped_split(records, seed=seed, duplicate_of=content_duplicate_groups(records))
    if expected_fingerprint and split_fingerprint(split) != expected_fingerprint:
        raise DatasetError("the split rebuilt from this data folder does not match the shipped models' split "
                           f"(fingerprint {split_fingerprint(split)[:12]} vs {expected_fingerprint[:12]}); "
                           "is it the same HAM10000 copy?")
    return split
