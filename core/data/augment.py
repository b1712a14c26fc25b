"""Batch augmentation for dermoscopy, on uint8 tensors, in one vectorised pass per batch.

Dermoscopic images have no canonical orientation, so flips and 90-degree rotations are free;
random resized crops (zoom, shift) and mild colour jitter mimic different devices and framing.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    min_crop_area: float = 0.55  # random resized crop keeps at least this share of the image
    max_aspect_change: float = 1.25
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15


def draw_augmentation(n: int, cfg: AugmentConfig, generator: torch.Generator) -> dict:
    """The random draws of one batch of n images: colour factors and one affine warp (theta) per image."""
    g = generator
    draws = {name: 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * getattr(cfg, name)
             for name in ("contrast", "saturation")}
    draws["brightness"] = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * cfg.brightness
    # random resized crop + flip + 90-degree rotation as one affine warp per image
    area = cfg.min_crop_area + torch.rand(n, generator=g) * (1 - cfg.min_crop_area)
    log_r = (torch.rand(n, generator=g) * 2 - 1) * math.log(cfg.max_aspect_change)
    ratio = torch.exp(log_r)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=g) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    k = torch.randint(0, 4, (n,), generator=g).float() * (math.pi / 2)
    cos, sin = torch.cos(k).round(), torch.sin(k).round()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    draws["theta"] = theta
    return draws


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, std=(0.226,),
                  rows=slice(None), batch_size: int = None) -> torch.Tensor:
    """x: normalised float N x C x H x W (normalised with `std`) -> augmented copy (same shape).

    With `rows`, x holds only those rows of a batch of `batch_size` images: the draws are the whole batch's, so
    each rank of a distributed run augments just its share of the same augmented global batch.
    """
    draws = {k: v[rows] for k, v in draw_augmentation(batch_size or x.shape[0], cfg, generator).items()}
    # colour jitter in normalised space: contrast and saturation scaling, brightness shift
    mean_lum = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean_lum) * draws["contrast"] + mean_lum
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * draws["saturation"] + gray
    x = x + draws["brightness"] / (sum(std) / len(std))
    grid = F.affine_grid(draws["theta"], list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
