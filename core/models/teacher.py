"""Teachers: hybrid ConvNeXt + ViT (timm) with an exit per stage and layer fusion.

`LiteConvNeXtViT` (shipped) puts both branches on an ImageNet-initialised EfficientNet-Lite trunk,
as hybrid ViTs do: the ViT tokenises the trunk's stride-16 map and a ConvNeXt stage continues it to
stride 32. `HybridConvNeXtViT` is the earlier from-scratch design (ConvNeXt and ViT each on the
image), kept so that its checkpoints and the scratch ablation still load.
"""

import math

import timm
import torch
from timm.layers import LayerNorm, LayerNorm2d, trunc_normal_
from timm.models.convnext import ConvNeXtStage
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from core.models.fusion import HybridNet
from core.models.registry import register_model
from core.models.trunk import EfficientNetLiteTrunk


def tokens_to_map(t):
    """reshape_transform for Grad-CAM: token sequences (B, N, C) on a square grid become (B, C, g, g); maps
    pass through. The grid comes from the token count, so one transform serves members of different sizes."""
    if t.ndim == 3:
        grid = math.isqrt(t.shape[1])
        return t.reshape(t.shape[0], grid, grid, t.shape[2]).permute(0, 3, 1, 2)
    return t


@register_model("hybrid_convnext_vit")
class HybridConvNeXtViT(HybridNet):
    def __init__(self, img_size=112, num_classes=7, fusion_dim=256, drop_rate=0.2,
                 convnext_dims=(32, 64, 128, 256), convnext_depths=(2, 2, 6, 2),
                 vit_dim=192, vit_depth=6, vit_heads=3, patch_size=16, drop_path_rate=0.1):
        convnext = timm.create_model(
            "convnext_atto", pretrained=False, num_classes=0, dims=tuple(convnext_dims),
            depths=tuple(convnext_depths), drop_path_rate=drop_path_rate,
        )
        vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=vit_dim, depth=vit_depth,
            num_heads=vit_heads, num_classes=0, class_token=False, global_pool="avg",
            drop_path_rate=drop_path_rate,
        )
        group = vit_depth // 3
        self_vit_indices = [group - 1, 2 * group - 1, vit_depth - 1]
        stage_dims = [convnext_dims[i] + vit_dim for i in (1, 2, 3)]
        super().__init__(stage_dims, num_classes, fusion_dim, drop_rate)
        self.convnext = convnext
        self.vit = vit
        self.vit_indices = self_vit_indices

    def stage_features(self, x):
        conv_maps = self.convnext.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
        vit_maps = self.vit.forward_intermediates(
            x, indices=self.vit_indices, output_fmt="NCHW", intermediates_only=True
        )
        return [torch.cat([c.mean(dim=(2, 3)), v.mean(dim=(2, 3))], dim=1) for c, v in zip(conv_maps, vit_maps)]

    def cam_target_layers(self):
        """Grad-CAM layers: ConvNeXt stage 3 (stride 16; stage 4 is only 3x3 at 112 px) and the ViT's
        last block, whose tokens `cam_reshape_transform` lays out on the 7x7 patch grid."""
        return [self.convnext.stages[2], self.vit.blocks[-1]]

    def cam_reshape_transform(self):
        return tokens_to_map


@register_model("lite_convnext_vit")
class LiteConvNeXtViT(HybridNet):
    """EfficientNet-Lite trunk (strides 8/16/32) + ViT on its stride-16 tokens + ConvNeXt stage to stride 32.

    Stage 1: trunk stride 8. Stage 2: trunk stride 16 | ViT after half its blocks. Stage 3: trunk
    stride 32 | ConvNeXt | ViT output. Each part is mean-pooled and concatenated per stage.
    """

    def __init__(self, img_size=160, num_classes=7, fusion_dim=256, drop_rate=0.3, effnet_arch="efficientnet_lite0",
                 vit_dim=192, vit_depth=4, vit_heads=3, convnext_dim=256, convnext_depth=2, drop_path_rate=0.1):
        trunk = EfficientNetLiteTrunk(effnet_arch, num_blocks=7, out_blocks=(2, 4, 6), drop_path_rate=drop_path_rate)
        c8, c16, c32 = trunk.channels
        super().__init__([c8, c16 + vit_dim, c32 + convnext_dim + vit_dim], num_classes, fusion_dim, drop_rate)
        self.trunk = trunk
        grid = img_size // 16
        self.tokenize = nn.Conv2d(c16, vit_dim, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, vit_dim))
        trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, vit_depth).tolist()
        self.vit_blocks = nn.ModuleList(Block(vit_dim, vit_heads, qkv_bias=True, drop_path=r) for r in rates)
        self.vit_norm = nn.LayerNorm(vit_dim)
        self.convnext = ConvNeXtStage(c16, convnext_dim, stride=2, depth=convnext_depth, ls_init_value=1e-6,
                                      norm_layer=LayerNorm2d, norm_layer_cl=LayerNorm,
                                      drop_path_rates=[drop_path_rate] * convnext_depth)
        self.vit_mid = vit_depth // 2

    def stage_features(self, x):
        m8, m16, m32 = self.trunk(x)
        tokens = self.tokenize(m16).flatten(2).transpose(1, 2) + self.pos_embed
        for i, block in enumerate(self.vit_blocks):
            tokens = block(tokens)
            if i == self.vit_mid - 1:
                mid = tokens
        tokens = self.vit_norm(tokens)
        conv = self.convnext(m16)
        return [m8.mean(dim=(2, 3)),
                torch.cat([m16.mean(dim=(2, 3)), mid.mean(dim=1)], dim=1),
                torch.cat([m32.mean(dim=(2, 3)), conv.mean(dim=(2, 3)), tokens.mean(dim=1)], dim=1)]

    def load_pretrained(self) -> dict:
        """ImageNet weights for the trunk (ViT and ConvNeXt parts start fresh); returns the provenance."""
        return {"trunk": self.trunk.load_pretrained()}

    def cam_target_layers(self):
        """Grad-CAM layers: the trunk's stride-16 map and the last ViT block (tokens on the stride-16 grid)."""
        return [self.trunk.blocks[4], self.vit_blocks[-1]]

    def cam_layer_candidates(self) -> dict:
        """Target-layer sets that `core.explain.search` compares."""
        vit = f"vit_blocks.{len(self.vit_blocks) - 1}"
        return {"trunk s8": ["trunk.blocks.2"], "trunk s16": ["trunk.blocks.4"], "trunk s32": ["trunk.blocks.6"],
                "vit": [vit], "trunk s16 + vit": ["trunk.blocks.4", vit], "convnext s32": ["convnext"]}

    def cam_reshape_transform(self):
        return tokens_to_map
