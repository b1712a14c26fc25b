"""Teacher ensemble: several trained hybrid teachers, each fed at its own input size, answer as one model.

The final and exit logits are the members' averages (what distillation learns from and what the app shows);
stage features are concatenated member by member, so feature distillation and the out-of-distribution test
see every member. The members' configs travel in the ensemble's own config (`arch_kwargs["members"]`), so a
saved ensemble rebuilds with `create_model` like any other checkpoint.
"""

import torch
import torch.nn.functional as F
from torch import nn

from core.models.config import ModelConfig
from core.models.fusion import HybridAnswers, HybridOutput
from core.models.registry import create_model, register_model


@register_model("teacher_ensemble")
class TeacherEnsemble(HybridAnswers, nn.Module):
    """Averaged-logit ensemble of hybrid models; the input comes at the largest member size and is resized
    (antialiased) for the others."""

    def __init__(self, img_size, num_classes, fusion_dim, drop_rate, members=()):
        super().__init__()
        configs = [ModelConfig.from_dict(m) for m in members]
        if not configs:
            raise ValueError("an ensemble needs at least one member")
        self.sizes = [c.img_size for c in configs]
        if img_size != max(self.sizes):
            raise ValueError(f"ensemble input size {img_size} is not the largest member size {max(self.sizes)}")
        self.members = nn.ModuleList(create_model(c) for c in configs)
        depths = {len(m.stage_dims) for m in self.members}
        if len(depths) != 1:
            raise ValueError(f"members have different numbers of stages: {sorted(depths)}")
        self.stage_dims = [sum(dims) for dims in zip(*(m.stage_dims for m in self.members))]

    def _member_input(self, x, size: int):
        if x.shape[-1] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def forward(self, x) -> HybridOutput:
        outs = [m(self._member_input(x, s)) for m, s in zip(self.members, self.sizes)]
        mean = lambda tensors: torch.stack(tensors).mean(dim=0)  # noqa: E731
        return HybridOutput(
            logits=mean([o.logits for o in outs]),
            exit_logits=[mean(list(k)) for k in zip(*(o.exit_logits for o in outs))],
            stage_features=[torch.cat(k, dim=1) for k in zip(*(o.stage_features for o in outs))],
            fused_feature=torch.cat([o.fused_feature for o in outs], dim=1),
            fusion_weights=mean([o.fusion_weights for o in outs]))

    def load_pretrained(self) -> dict:
        return {f"member {i}": m.load_pretrained() for i, m in enumerate(self.members)}

    def cam_target_layers(self):
        """Every member's own Grad-CAM layers: the library scales each layer's map to the input and averages
        them, so the ensemble's map is the members' averaged maps for the ensemble's answer."""
        return [layer for m in self.members for layer in m.cam_target_layers()]

    def cam_layer_candidates(self) -> dict:
        """Each member's candidate layer sets, taken in every member at once."""
        shared = set.intersection(*(set(m.cam_layer_candidates()) for m in self.members))
        return {name: [f"members.{i}.{layer}" for i, m in enumerate(self.members)
                       for layer in m.cam_layer_candidates()[name]]
                for name in sorted(shared)}

    def cam_reshape_transform(self):
        transforms = {m.cam_reshape_transform() for m in self.members} - {None}
        if len(transforms) > 1:
            raise ValueError("ensemble members need one shared Grad-CAM reshape transform")
        return transforms.pop() if transforms else None


def ensemble_config(member_configs) -> ModelConfig:
    """The config of an ensemble of models with these configs: they must agree on classes and normalisation.
    Its parameters are stored in float16, which keeps a shipped ensemble one file under the repository's 50 MB
    limit; its reports are measured on the stored (rounded) weights."""
    first = member_configs[0]
    for c in member_configs[1:]:
        if (c.classes, c.mean, c.std, c.colour_constancy) != (first.classes, first.mean, first.std,
                                                               first.colour_constancy):
            raise ValueError("ensemble members must share classes, input normalisation and colour constancy")
    return ModelConfig(arch="teacher_ensemble", img_size=max(c.img_size for c in member_configs),
                       num_classes=first.num_classes, classes=first.classes, mean=first.mean, std=first.std,
                       colour_constancy=first.colour_constancy,
                       fusion_dim=sum(c.fusion_dim for c in member_configs), drop_rate=0.0,
                       arch_kwargs={"members": [c.to_dict() for c in member_configs]},
                       pretrained={f"member {i}": c.pretrained for i, c in enumerate(member_configs)},
                       weights_dtype="float16")
