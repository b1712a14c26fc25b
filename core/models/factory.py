"""Model factory: every registered architecture, the shipped roles' default configs, and `create_model`."""

from core.models import ensemble, student, teacher
from core.models.config import ModelConfig
from core.models.pretrained import LITE_MEAN, LITE_STD
from core.models.registry import MODEL_REGISTRY, create_model

ARCHITECTURE_MODULES = (teacher, student, ensemble)  # imported for their @register_model entries
__all__ = ["ARCHITECTURE_MODULES", "DEFAULT_CONFIGS", "MODEL_REGISTRY", "STUDENT_KWARGS", "count_params",
           "create_model"]

# The shipped student's EfficientNet branch: ImageNet Lite0 up to block 4 (112 channels, stride 16);
# the CNN branch's last conv keeps stride 16 so both branches meet at strides 8, 16, 16.
STUDENT_KWARGS = {"effnet_arch": "efficientnet_lite0", "channel_multiplier": 1.0, "depth_multiplier": 1.0,
                  "effnet_blocks": 5, "effnet_out_blocks": (2, 3, 4), "cnn_widths": (16, 24, 48, 64),
                  "cnn_strides": (2, 2, 1)}

# Role -> default config of the shipped architectures (EfficientNet-Lite weights expect LITE_MEAN/STD).
DEFAULT_CONFIGS = {
    "teacher": lambda img_size: ModelConfig(arch="lite_convnext_vit", img_size=img_size, fusion_dim=256,
                                            drop_rate=0.3, mean=LITE_MEAN, std=LITE_STD),
    "student": lambda img_size: ModelConfig(arch="hybrid_cnn_efficientnet", img_size=img_size, fusion_dim=128,
                                            mean=LITE_MEAN, std=LITE_STD, arch_kwargs=dict(STUDENT_KWARGS)),
}


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
