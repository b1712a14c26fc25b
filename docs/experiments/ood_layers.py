"""Which feature and percentile for the input gate (docs/safety.md): Mahalanobis and k-NN scores of each stage's
pooled feature and the fused feature, thresholds at the 99.5th / 99.9th validation percentile, the share of
validation and external images flagged, and which negative-corpus images each misses.

  HAM10000_DIR=../shared/data/ham10000 python docs/experiments/ood_layers.py student 128
  HAM10000_DIR=../shared/data/ham10000 python docs/experiments/ood_layers.py teacher 160
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from core.paths import resolve_data_dir, resolve_external_dir, weights_dir  # noqa: E402

WEIGHTS = weights_dir()
from core.data.ham10000 import load_ham10000, load_external
from core.data.split import recompute_split, split_indices
from core.data.cache import cached_images
from core.data.preprocess import resize_uint8, load_image, to_model_tensor
from core.models.checkpoint import load_checkpoint
from core.evaluation.ood import fit_class_gaussians, mahalanobis_distance
from tests.corpus import build_negative_corpus
torch.set_num_threads(2)
name = sys.argv[1]; size = int(sys.argv[2])
records = load_ham10000(resolve_data_dir(None))
m = json.load(open(WEIGHTS / "manifest.json"))
split = recompute_split(records, 42, m["test_split"]["fingerprint"])
part = split_indices(records, split)
model, cfg, meta = load_checkpoint(WEIGHTS / f"{name}.pt")
images = cached_images(records, size)
labels = np.array([r.label for r in records])
ext = load_external(resolve_external_dir())
ext_images = cached_images(ext, size)
neg = build_negative_corpus()
neg_images = np.stack([resize_uint8(load_image(v), size) for v in neg.values()])
@torch.inference_mode()
def feats(arr):
    out = {"fused": [], "s0": [], "s1": [], "s2": [], "logits": []}
    for i in range(0, len(arr), 128):
        o = model(to_model_tensor(torch.from_numpy(np.ascontiguousarray(arr[i:i+128])), cfg))
        out["fused"].append(o.fused_feature); out["logits"].append(o.logits)
        for k, f in enumerate(o.stage_features): out[f"s{k}"].append(f)
    return {k: torch.cat(v).numpy().astype(np.float64) for k, v in out.items()}
rng = np.random.default_rng(0)
tr = np.sort(rng.choice(part["train"], 4000, replace=False))
F = {"train": feats(images[tr]), "val": feats(images[part["val"]]), "ext": feats(ext_images), "neg": feats(neg_images)}
ytr = labels[tr]
def maha(key, transform=lambda x: x):
    means, prec = fit_class_gaussians(transform(F["train"][key]), ytr, 7)
    return {s: mahalanobis_distance(transform(F[s][key]), means, prec) for s in ("val", "ext", "neg")}
def knn(key, k=10):
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    bank = norm(F["train"][key])
    return {s: -np.sort(norm(F[s][key]) @ bank.T, axis=1)[:, -k] for s in ("val", "ext", "neg")}
scores = {}
for key in ("fused", "s0", "s1", "s2"):
    scores[f"maha_{key}"] = maha(key)
    scores[f"knn_{key}"] = knn(key)
for key in ("s0","s1","s2"):
    pass
# combined: max over stages of score/val-percentile
def combo(keys, p):
    out = {s: np.max([scores[k][s] / np.percentile(scores[k]["val"], p) for k in keys], axis=0) for s in ("val","ext","neg")}
    return out
names = list(neg)
for p in (99.5, 99.9):
    print(f"--- threshold = val {p} percentile")
    allsc = dict(scores)
    allsc["maha_stages"] = combo(["maha_s0","maha_s1","maha_s2"], p)
    allsc["maha_all"] = combo(["maha_s0","maha_s1","maha_s2","maha_fused"], p)
    allsc["knn_stages"] = combo(["knn_s0","knn_s1","knn_s2"], p)
    for k, sc in allsc.items():
        thr = np.percentile(sc["val"], p) if not k.endswith(("stages","all")) else 1.0
        flagged = [n for n, v in zip(names, sc["neg"]) if v > thr]
        print(f"{k:14s} val {np.mean(sc['val']>thr):.3%} ext {np.mean(sc['ext']>thr):.3%} neg {len(flagged)}/{len(names)}",
              "missed:", [n for n in names if n not in flagged and not n.startswith(('solid','brown','skimage_text','skimage_page','skimage_camera','skimage_coins','skimage_moon','skimage_brick','skimage_grass','skimage_gravel','rendered'))])
