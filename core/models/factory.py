"""Model registry: an architecture name in a config maps to its class; `create_model` builds it."""

from core.models.config import ModelConfig
from core.models.student import HybridCNNEfficientNet
from core.models.teacher import HybridConvNeXtViT

MODEL_REGISTRY = {
    "hybrid_convnext_vit": HybridConvNeXtViT,
    "hybrid_cnn_efficientnet": HybridCNNEfficientNet,
}

# Role -> default config of the shipped architectures.
DEFAULT_CONFIGS = {
    "teacher": lambda img_size: ModelConfig(arch="hybrid_convnext_vit", img_size=img_size, fusion_dim=256),
    "student": lambda img_size: ModelConfig(arch="hybrid_cnn_efficientnet", img_size=img_size, fusion_dim=128),
}


def create_model(config: ModelConfig):
    """Build an untrained model from its config."""
    try:
        cls = MODEL_REGISTRY[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {sorted(MODEL_REGISTRY)}") from None
    return cls(img_size=config.img_size, num_classes=config.num_classes, fusion_dim=config.fusion_dim,
               drop_rate=config.drop_rate, **config.arch_kwargs)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
