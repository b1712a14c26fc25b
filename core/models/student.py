"""Student: hybrid plain CNN + width-reduced EfficientNet-Lite (timm), exits and layer fusion.

EfficientNet-Lite (ReLU6, no squeeze-excite) quantizes well to int8. The plain CNN branch adds a
cheap, differently-biased view of colour and texture. Stage k concatenates both branches' maps at
the same stride (8, 16, 32); `stage_maps[k]` is an identity module where Grad-CAM hooks.
"""

import torch
from timm.layers import ConvNormAct
from timm.models.efficientnet import _gen_efficientnet_lite
from torch import nn

from core.models.fusion import HybridNet


class PlainCNN(nn.Module):
    """Conv-BN-ReLU stack (timm ConvNormAct) giving maps at strides 8, 16, 32."""

    def __init__(self, widths=(16, 24, 48, 64)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(
            ConvNormAct(3, w0, 3, stride=2, act_layer=nn.ReLU),
            ConvNormAct(w0, w0, 3, stride=2, act_layer=nn.ReLU),
        )
        self.stages = nn.ModuleList([
            ConvNormAct(w0, w1, 3, stride=2, act_layer=nn.ReLU),
            ConvNormAct(w1, w2, 3, stride=2, act_layer=nn.ReLU),
            ConvNormAct(w2, w3, 3, stride=2, act_layer=nn.ReLU),
        ])
        self.channels = [w1, w2, w3]

    def forward(self, x):
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class HybridCNNEfficientNet(HybridNet):
    def __init__(self, img_size=112, num_classes=7, fusion_dim=128, drop_rate=0.2,
                 channel_multiplier=0.35, depth_multiplier=0.5, cnn_widths=(16, 24, 48, 64),
                 drop_path_rate=0.05):
        effnet = _gen_efficientnet_lite(
            "efficientnet_lite0", channel_multiplier=channel_multiplier,
            depth_multiplier=depth_multiplier, pretrained=False, features_only=True,
            out_indices=(2, 3, 4), drop_path_rate=drop_path_rate,
        )
        cnn = PlainCNN(cnn_widths)
        stage_dims = [a + b for a, b in zip(cnn.channels, effnet.feature_info.channels())]
        super().__init__(stage_dims, num_classes, fusion_dim, drop_rate)
        self.cnn = cnn
        self.effnet = effnet
        self.stage_maps = nn.ModuleList(nn.Identity() for _ in stage_dims)

    def stage_features(self, x):
        maps = [ident(torch.cat([c, e], dim=1)) for ident, c, e in zip(self.stage_maps, self.cnn(x), self.effnet(x))]
        return [m.mean(dim=(2, 3)) for m in maps]

    def cam_target_layers(self):
        """Grad-CAM layers: the fused stage maps at strides 16 and 32 (both branches); one 4x4 map
        alone is too coarse at 112 px. pytorch-grad-cam averages the per-layer maps."""
        return [self.stage_maps[1], self.stage_maps[2]]

    def cam_reshape_transform(self):
        return None
