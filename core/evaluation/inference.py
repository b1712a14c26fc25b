"""Batched logits for a cached uint8 image array, shared by training validation and evaluation."""

import numpy as np
import torch

from core.data.preprocess import to_model_tensor


@torch.inference_mode()
def batched_logits(logits_fn, images_uint8, mean, std, batch_size: int = 128) -> np.ndarray:
    """logits_fn: float NCHW tensor -> logits tensor. images_uint8: N x S x S x 3 array."""
    out = []
    for start in range(0, len(images_uint8), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images_uint8[start:start + batch_size]))
        out.append(torch.as_tensor(logits_fn(to_model_tensor(chunk, mean, std))).float())
    return torch.cat(out).numpy()
