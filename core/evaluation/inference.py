"""Batched model outputs for cached uint8 images, dihedral test-time augmentation, and the inference
mode (TTA on or off, with its calibration) chosen on validation. Shared by training, evaluation and the app.

An outputs function maps a normalised NCHW float tensor to logits, or to (logits, pooled feature); the
feature feeds the out-of-distribution test (core.evaluation.ood).
"""

from dataclasses import dataclass

import numpy as np
import torch

from core.data.preprocess import to_model_tensor
from core.evaluation.calibration import fit_calibration, softmax_np
from core.evaluation.metrics import classification_metrics
from core.evaluation.ood import fit_ood

OOD_TRAIN_IMAGES = 4000  # training images whose features fit the class Gaussians (a fixed random subset)


@dataclass
class Outputs:
    """logits: for probabilities (under TTA the log of the views' mean softmax, so temperature scaling still
    applies on top); plain_logits and features: of the unaugmented view (energy and feature distance)."""

    logits: torch.Tensor
    plain_logits: torch.Tensor
    features: torch.Tensor = None


def dihedral_views(x: torch.Tensor) -> list:
    """The 8 flips x 90-degree rotations of an NCHW batch (dermoscopy has no canonical orientation);
    the first view is the image itself."""
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


def _split(result):
    if isinstance(result, (tuple, list)):
        return torch.as_tensor(result[0]).float(), torch.as_tensor(result[1]).float()
    return torch.as_tensor(result).float(), None


def model_outputs(outputs_fn, x: torch.Tensor, tta: bool = False) -> Outputs:
    """One batched call: the plain view, or all 8 dihedral views at once."""
    if not tta:
        logits, features = _split(outputs_fn(x))
        return Outputs(logits, logits, features)
    n = x.shape[0]
    logits, features = _split(outputs_fn(torch.cat(dihedral_views(x))))
    probs = torch.softmax(logits, dim=-1).view(8, n, -1).mean(dim=0)
    return Outputs(probs.clamp_min(1e-12).log(), logits[:n], None if features is None else features[:n])


@torch.inference_mode()
def batched_outputs(outputs_fn, images_uint8, config, batch_size: int = 128, tta: bool = False) -> Outputs:
    """`model_outputs` over N x S x S x 3 uint8 images, as numpy arrays."""
    parts = []
    step = max(1, batch_size // 8) if tta else batch_size
    for start in range(0, len(images_uint8), step):
        chunk = to_model_tensor(torch.from_numpy(np.ascontiguousarray(images_uint8[start:start + step])), config)
        parts.append(model_outputs(outputs_fn, chunk, tta))
    return concat_outputs(parts)


def concat_outputs(parts) -> Outputs:
    """Outputs of consecutive parts of a set, joined in order, as numpy arrays."""
    join = lambda name: (None if getattr(parts[0], name) is None  # noqa: E731
                         else np.concatenate([np.asarray(getattr(p, name)) for p in parts]))
    return Outputs(join("logits"), join("plain_logits"), join("features"))


def batched_logits(logits_fn, images_uint8, config, batch_size: int = 128, tta: bool = False) -> np.ndarray:
    return batched_outputs(logits_fn, images_uint8, config, batch_size, tta).logits


def fit_inference_mode(outputs_fn, val_images, val_labels, config) -> dict:
    """Calibration of the inference mode that validation prefers, TTA or plain.

    TTA is the default only if it raises validation balanced accuracy; each mode gets its own
    temperature, thresholds and referral points, the other mode's under "other" (see `calibration_for`).
    """
    scores, calibrations = {}, {}
    for tta in (False, True):
        out = batched_outputs(outputs_fn, val_images, config, tta=tta)
        scores[tta] = classification_metrics(val_labels, softmax_np(out.logits), config.classes)["balanced_accuracy"]
        fitted = fit_calibration(out.logits, val_labels, out.plain_logits, config.classes)
        calibrations[tta] = {**fitted.to_dict(), "tta": tta}
    use_tta = scores[True] > scores[False]
    decision = {"val_balanced_accuracy_plain": scores[False], "val_balanced_accuracy_tta": scores[True]}
    return {**calibrations[use_tta], **decision, "other": calibrations[not use_tta]}


def fit_feature_distance(outputs_fn, images, labels, part: dict, config, seed: int = 0) -> dict:
    """The out-of-distribution test of a model: class Gaussians on (a fixed subset of) training-split
    features, threshold on validation-split features (`core.evaluation.ood.fit_ood`)."""
    train = np.asarray(part["train"])
    if len(train) > OOD_TRAIN_IMAGES:
        train = np.sort(np.random.default_rng(seed).choice(train, OOD_TRAIN_IMAGES, replace=False))
    train_features = batched_outputs(outputs_fn, images[train], config).features
    val_features = batched_outputs(outputs_fn, images[part["val"]], config).features
    return fit_ood(train_features, np.asarray(labels)[train], val_features, config.num_classes)


def fit_model_calibration(outputs_fn, config, images, labels, part: dict) -> dict:
    """Everything a model file stores about its answers, fitted on the split `part` of `images`:
    {"calibration": inference mode, temperature, uncertain and referral thresholds (validation),
     "ood": the feature-distance test (training features, validation threshold)}."""
    labels = np.asarray(labels)
    calibration = fit_inference_mode(outputs_fn, images[part["val"]], labels[part["val"]], config)
    ood = fit_feature_distance(outputs_fn, images, labels, part, config)
    return {"calibration": calibration, "ood": ood}


def calibration_for(calibration: dict, tta=None) -> dict:
    """The calibration of the requested mode (None: the default chosen on validation)."""
    if tta is None or bool(tta) == bool(calibration.get("tta", False)):
        return calibration
    return calibration.get("other", calibration)
