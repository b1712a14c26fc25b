"""Layer fusion and the structured output every model returns.

Each stage's pooled feature is projected to a common width; a small gate scores every stage per
image and the softmax-weighted sum of the projections feeds the final classifier, so the final
prediction draws on shallow (texture, colour) and deep (shape) stages alike.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class HybridOutput:
    """What a hybrid model's forward returns: final logits, one logit set per exit, pooled stage features."""

    logits: torch.Tensor
    exit_logits: list
    stage_features: list
    fused_feature: torch.Tensor
    fusion_weights: torch.Tensor


class ExitHead(nn.Module):
    """Intermediate exit: a small classifier on one stage's pooled feature (deep supervision)."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x):
        return self.fc(self.norm(x))


class StageFusion(nn.Module):
    """Attention-weighted fusion of per-stage pooled features (projected to `dim`) into one vector."""

    def __init__(self, in_dims, dim: int):
        super().__init__()
        self.proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim), nn.GELU()) for d in in_dims
        )
        self.gate = nn.Linear(dim, 1)

    def forward(self, feats):
        projected = torch.stack([p(f) for p, f in zip(self.proj, feats)], dim=1)  # B x K x D
        weights = torch.softmax(self.gate(projected).squeeze(-1), dim=1)  # B x K
        fused = (weights.unsqueeze(-1) * projected).sum(dim=1)
        return fused, weights


class HybridAnswers:
    """The views of a HybridOutput that inference, Grad-CAM and export take; mixed into every model whose
    forward returns one."""

    def predict(self, x):
        """Final logits only: Grad-CAM and training validation."""
        return self.forward(x).logits

    def logits_and_features(self, x):
        """(final logits, last stage's pooled feature): the inference and export path; the feature feeds the
        out-of-distribution test (it separated non-lesion images from real ones far better than the fused
        feature, see core.evaluation.ood)."""
        out = self.forward(x)
        return out.logits, out.stage_features[-1]


class HybridNet(HybridAnswers, nn.Module):
    """Two backbones over one input, K stages each; stage k = both branches' stage-k features.

    Subclasses implement `stage_maps(x)` returning, per stage, a list of pooled branch vectors.
    """

    def __init__(self, stage_dims, num_classes: int, fusion_dim: int, drop_rate: float):
        super().__init__()
        self.stage_dims = list(stage_dims)
        self.exits = nn.ModuleList(ExitHead(d, num_classes) for d in self.stage_dims)
        self.fusion = StageFusion(self.stage_dims, fusion_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(fusion_dim, num_classes)

    def stage_features(self, x):
        raise NotImplementedError

    def forward(self, x) -> HybridOutput:
        feats = self.stage_features(x)
        exit_logits = [head(f) for head, f in zip(self.exits, feats)]
        fused, weights = self.fusion(feats)
        logits = self.head(self.head_drop(fused))
        return HybridOutput(logits, exit_logits, feats, fused, weights)


class LogitsAndFeatures(nn.Module):
    """Wraps a hybrid model so that module(x) returns (logits, last stage's feature): what ONNX export keeps."""

    def __init__(self, model: HybridNet):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.logits_and_features(x)


class LogitsOnly(nn.Module):
    """Wraps a hybrid model so that module(x) returns logits (for Grad-CAM, ONNX export, evaluation)."""

    def __init__(self, model: HybridNet):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.predict(x)
