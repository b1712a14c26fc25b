"""Batched logits for cached uint8 images, dihedral test-time augmentation, and the inference mode
(TTA on or off, with its calibration) chosen on validation. Shared by training, evaluation and the app."""

import numpy as np
import torch

from core.data.preprocess import to_model_tensor
from core.evaluation.calibration import fit_calibration, softmax_np
from core.evaluation.metrics import classification_metrics


def dihedral_views(x: torch.Tensor) -> list:
    """The 8 flips x 90-degree rotations of an NCHW batch (dermoscopy has no canonical orientation)."""
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


def tta_logits(logits_fn, x: torch.Tensor) -> torch.Tensor:
    """Dihedral TTA in one batched call: log of the mean softmax over the 8 views, so that its
    softmax is the averaged probability (and temperature scaling still applies on top)."""
    n = x.shape[0]
    logits = torch.as_tensor(logits_fn(torch.cat(dihedral_views(x)))).float()
    probs = torch.softmax(logits, dim=-1).view(8, n, -1).mean(dim=0)
    return probs.clamp_min(1e-12).log()


@torch.inference_mode()
def batched_logits(logits_fn, images_uint8, mean, std, batch_size: int = 128, tta: bool = False) -> np.ndarray:
    """logits_fn: float NCHW tensor -> logits tensor. images_uint8: N x S x S x 3 array."""
    out = []
    step = max(1, batch_size // 8) if tta else batch_size
    for start in range(0, len(images_uint8), step):
        chunk = to_model_tensor(torch.from_numpy(np.ascontiguousarray(images_uint8[start:start + step])), mean, std)
        logits = tta_logits(logits_fn, chunk) if tta else logits_fn(chunk)
        out.append(torch.as_tensor(logits).float())
    return torch.cat(out).numpy()


def fit_inference_mode(logits_fn, val_images, val_labels, mean, std) -> dict:
    """Calibration of the inference mode that validation prefers, TTA or plain.

    TTA is the default only if it raises validation balanced accuracy; each mode gets its own
    temperature and thresholds, the other mode's under "other" (see `calibration_for`).
    """
    scores, calibrations = {}, {}
    for tta in (False, True):
        logits = batched_logits(logits_fn, val_images, mean, std, tta=tta)
        scores[tta] = classification_metrics(val_labels, softmax_np(logits))["balanced_accuracy"]
        calibrations[tta] = {**fit_calibration(logits, val_labels).to_dict(), "tta": tta}
    use_tta = scores[True] > scores[False]
    decision = {"val_balanced_accuracy_plain": scores[False], "val_balanced_accuracy_tta": scores[True]}
    return {**calibrations[use_tta], **decision, "other": calibrations[not use_tta]}


def calibration_for(calibration: dict, tta=None) -> dict:
    """The calibration of the requested mode (None: the default chosen on validation)."""
    if tta is None or bool(tta) == bool(calibration.get("tta", False)):
        return calibration
    return calibration.get("other", calibration)
