"""Model configs: plain dataclasses saved inside every checkpoint so that nothing is guessed at load time."""

from dataclasses import asdict, dataclass, field

from core.classes import CLASSES
from core.data.preprocess import COLOUR_CONSTANCY


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it: architecture, input and class order."""

    arch: str  # key in core.models.registry.MODEL_REGISTRY
    img_size: int = 112
    num_classes: int = len(CLASSES)
    classes: tuple = CLASSES
    mean: tuple = field(kw_only=True)  # input normalisation: required, it must match the weights' training
    std: tuple = field(kw_only=True)
    colour_constancy: str = "none"  # key in core.data.preprocess.COLOUR_CONSTANCY, applied before mean/std
    fusion_dim: int = 128
    drop_rate: float = 0.2
    arch_kwargs: dict = field(default_factory=dict)
    pretrained: dict = None  # provenance of ImageNet weights the model started from (package, version, sha256)
    weights_dtype: str = "float32"  # dtype the parameters are stored in; loading always gives float32 models
    version: str = "0"

    def __post_init__(self):
        if self.colour_constancy not in COLOUR_CONSTANCY:  # every input of the model depends on it
            raise ValueError(f"unknown colour constancy {self.colour_constancy!r} (known: {', '.join(COLOUR_CONSTANCY)})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for key in ("classes", "mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
