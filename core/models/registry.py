"""Model registry: architecture name -> class, filled by `@register_model` where each class is defined (as in
timm); `create_model` builds one from its config. `core.models.factory` imports every model module."""

from core.models.config import ModelConfig

MODEL_REGISTRY = {}


def register_model(name: str):
    def register(cls):
        MODEL_REGISTRY[name] = cls
        return cls
    return register


def create_model(config: ModelConfig):
    """Build an untrained model from its config."""
    try:
        cls = MODEL_REGISTRY[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {sorted(MODEL_REGISTRY)}") from None
    return cls(img_size=config.img_size, num_classes=config.num_classes, fusion_dim=config.fusion_dim,
               drop_rate=config.drop_rate, **config.arch_kwargs)
