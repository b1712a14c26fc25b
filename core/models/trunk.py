"""EfficientNet-Lite trunk (timm blocks): stem + the first `num_blocks` block groups, maps at chosen blocks.

Shared by the teacher (whole trunk) and the student (a truncated prefix). Lite variants use ReLU6
and no squeeze-excite, so they quantize well to int8. Attribute names (`conv_stem`, `bn1`,
`blocks`) match timm's feature extractor, so checkpoints of earlier releases still load.
"""

from timm.models.efficientnet import _gen_efficientnet_lite
from torch import nn

from core.models.pretrained import load_pretrained


# (channel, depth) multipliers of the published Lite variants (timm's efficientnet_liteN).
LITE_MULTIPLIERS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                    "efficientnet_lite2": (1.1, 1.2)}


class EfficientNetLiteTrunk(nn.Module):
    def __init__(self, arch="efficientnet_lite0", channel_multiplier=None, depth_multiplier=None, num_blocks=7,
                 out_blocks=(2, 4, 6), drop_path_rate=0.0):
        super().__init__()
        default_channels, default_depth = LITE_MULTIPLIERS[arch]
        net = _gen_efficientnet_lite(arch, channel_multiplier=channel_multiplier or default_channels,
                                     depth_multiplier=depth_multiplier or default_depth,
                                     pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        self.arch = arch
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = net.blocks[:num_blocks]
        self.out_blocks = tuple(out_blocks)
        self.channels = [self.blocks[i][-1].conv_pwl.out_channels if hasattr(self.blocks[i][-1], "conv_pwl")
                         else self.blocks[i][-1].conv_pw.out_channels for i in self.out_blocks]

    def forward(self, x):
        """List of feature maps, one per entry of `out_blocks`."""
        x = self.bn1(self.conv_stem(x))
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_blocks:
                maps.append(x)
        return maps

    def load_pretrained(self) -> dict:
        """Copy the packaged ImageNet weights of `arch` into this trunk; returns their provenance."""
        return load_pretrained(self, self.arch)
