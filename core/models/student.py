"""Student: hybrid plain CNN + EfficientNet-Lite trunk (timm), exits and layer fusion.

The shipped student keeps ImageNet-initialised EfficientNet-Lite0 up to block 4 (112 channels,
stride 16; ~0.7 M parameters); earlier releases used a width-reduced Lite0 from scratch (the
defaults here, so their checkpoints still load). The plain CNN branch adds a cheap,
differently-biased view of colour and texture. Stage k concatenates both branches' maps at the same
stride; `stage_maps[k]` is an identity module where Grad-CAM hooks.
"""

import torch
from timm.layers import ConvNormAct
from torch import nn

from core.models.fusion import HybridNet
from core.models.registry import register_model
from core.models.trunk import EfficientNetLiteTrunk


class PlainCNN(nn.Module):
    """Conv-BN-ReLU stack (timm ConvNormAct): a stride-4 stem, then one conv per stage with the given
    strides (default 2, 2, 2: maps at strides 8, 16, 32)."""

    def __init__(self, widths=(16, 24, 48, 64), strides=(2, 2, 2)):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            ConvNormAct(3, w0, 3, stride=2, act_layer=nn.ReLU),
            ConvNormAct(w0, w0, 3, stride=2, act_layer=nn.ReLU),
        )
        self.stages = nn.ModuleList(ConvNormAct(a, b, 3, stride=s, act_layer=nn.ReLU)
                                    for a, b, s in zip(widths[:-1], widths[1:], strides))
        self.channels = list(widths[1:])

    def forward(self, x):
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


@register_model("hybrid_cnn_efficientnet")
class HybridCNNEfficientNet(HybridNet):
    def __init__(self, img_size=112, num_classes=7, fusion_dim=128, drop_rate=0.2,
                 effnet_arch="efficientnet_lite0", channel_multiplier=0.35, depth_multiplier=0.5, effnet_blocks=7,
                 effnet_out_blocks=(2, 4, 6), cnn_widths=(16, 24, 48, 64), cnn_strides=(2, 2, 2),
                 drop_path_rate=0.05):
        effnet = EfficientNetLiteTrunk(effnet_arch, channel_multiplier, depth_multiplier, effnet_blocks,
                                       effnet_out_blocks, drop_path_rate)
        cnn = PlainCNN(cnn_widths, cnn_strides)
        stage_dims = [a + b for a, b in zip(cnn.channels, effnet.channels)]
        super().__init__(stage_dims, num_classes, fusion_dim, drop_rate)
        self.cnn = cnn
        self.effnet = effnet
        self.stage_maps = nn.ModuleList(nn.Identity() for _ in stage_dims)

    def stage_features(self, x):
        maps = [ident(torch.cat([c, e], dim=1)) for ident, c, e in zip(self.stage_maps, self.cnn(x), self.effnet(x))]
        return [m.mean(dim=(2, 3)) for m in maps]

    def load_pretrained(self) -> dict:
        """ImageNet weights for the EfficientNet branch (the CNN branch has none); returns the provenance."""
        return {"effnet": self.effnet.load_pretrained()}

    def cam_target_layers(self):
        """Grad-CAM layers: the fused maps of the last two stages (both branches); pytorch-grad-cam
        averages the per-layer maps."""
        return [self.stage_maps[1], self.stage_maps[2]]

    def cam_layer_candidates(self) -> dict:
        """Target-layer sets that `core.explain.search` compares: each stage's fused map, combinations, and
        each branch alone at the finest fused stride (plus the EfficientNet map one stride finer)."""
        names = [f"stage_maps.{k}" for k in range(len(self.stage_maps))]
        first = self.effnet.out_blocks[0]
        branches = {"cnn s8": ["cnn.stages.0"], "effnet s8": [f"effnet.blocks.{first}"],
                    "effnet s4": [f"effnet.blocks.{first - 1}"]}
        return {**{name: [name] for name in names}, "last two": names[-2:], "all": names, **branches}

    def cam_reshape_transform(self):
        return None
