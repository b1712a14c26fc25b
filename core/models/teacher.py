"""Teacher: hybrid ConvNeXt + ViT (timm) with an exit per stage and layer fusion.

Stage k pairs ConvNeXt stage k+1 (strides 8, 16, 32) with ViT block group k (blocks 1-2, 3-4,
5-6, tokens at stride 16); each pair's pooled features are concatenated.
"""

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from core.models.fusion import HybridNet


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
        self.grid = img_size // patch_size

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
        """Token sequences (B, N, C) of the ViT block become (B, C, g, g); conv maps pass through."""
        grid = self.grid

        def reshape(t):
            if t.ndim == 3:
                return t.reshape(t.shape[0], grid, grid, t.shape[2]).permute(0, 3, 1, 2)
            return t

        return reshape
