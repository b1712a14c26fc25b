"""Checkpoints that carry their own config, saved atomically and loaded with weights_only=True."""

import hashlib
import os
from pathlib import Path

import torch

from core.models.config import ModelConfig
from core.models.factory import create_model

FORMAT = "dermadistill-checkpoint-v1"


class CheckpointError(ValueError):
    """A weight file that is missing, damaged, tampered with or not ours; the message names the file."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj, path) -> None:
    """Write to a temporary file beside `path`, fsync, then os.replace: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stored_state_dict(model, config: ModelConfig) -> dict:
    """The state dict with parameters in `config.weights_dtype` (buffers such as BatchNorm statistics keep
    their precision); `load_state_dict` casts them back into the float32 model."""
    state = model.state_dict()
    dtype = getattr(torch, config.weights_dtype)
    if dtype == torch.float32:
        return state
    params = {name for name, _ in model.named_parameters()}
    return {k: v.to(dtype) if k in params and v.is_floating_point() else v for k, v in state.items()}


def save_checkpoint(path, model, config: ModelConfig, meta=None, extra=None) -> None:
    """Model weights + config (+ free-form JSON-like meta, + training state in `extra`)."""
    obj = {"format": FORMAT, "config": config.to_dict(), "state_dict": stored_state_dict(model, config),
           "meta": meta or {}}
    if extra:
        obj.update(extra)
    atomic_torch_save(obj, path)


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict, loaded safely; CheckpointError with the file name on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged zip, pickle refused by weights_only, truncated file...
        raise CheckpointError(f"cannot read weight file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DermaDistill checkpoint")
    return obj


def load_checkpoint(path):
    """(model in eval mode, ModelConfig, meta) from a checkpoint file."""
    obj = read_checkpoint(path)
    try:  # a hand-edited or foreign config fails here, named, not later at the first image
        config = ModelConfig.from_dict(obj["config"])
        model = create_model(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an unusable model config: {exc}") from None
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not match architecture {config.arch}: {exc}") from None
    model.eval()
    return model, config, obj.get("meta", {})
