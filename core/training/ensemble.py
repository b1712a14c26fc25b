"""Assemble trained teacher runs into one ensemble run folder: config.json, split.json, best.pt (calibrated on
validation) and report.json (test split), so that release, evaluation and distillation take it like any run.

`python -m core.train --stage ensemble --members runs/a,runs/b --data-dir DIR --out runs/teacher_ensemble`
"""

import json
import logging
from pathlib import Path

import numpy as np

from core.data.cache import cached_images
from core.data.ham10000 import load_ham10000
from core.data.split import load_split, save_split, split_fingerprint, split_indices
from core.models.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from core.models.ensemble import ensemble_config
from core.models.factory import count_params, create_model
from core.paths import resolve_data_dir
from core.training.config import TrainConfig, TrainConfigError
from core.training.trainer import finalize_run

log = logging.getLogger(__name__)


def member_runs(members: str) -> list:
    return [Path(run) for run in members.split(",") if run.strip()]


def member_entry(run: Path, meta: dict) -> dict:
    """What the ensemble's file records about one member: its run, file hash, command and validation score."""
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    return {"run": str(run), "sha256": sha256_file(run / "best.pt"), "command": config.command(),
            "epoch": meta.get("epoch"), "val_balanced_accuracy": meta.get("val", {}).get("val_balanced_accuracy")}


def assemble_ensemble(cfg: TrainConfig, callback) -> dict:
    """Build, calibrate and report the ensemble of `cfg.members`; returns the test report."""
    runs = member_runs(cfg.members)
    loaded = [load_checkpoint(run / "best.pt") for run in runs]
    splits = {meta.get("split_fingerprint") for _, _, meta in loaded}
    split = load_split(runs[0] / "split.json")
    if len(splits) != 1 or split_fingerprint(split) not in splits:
        raise TrainConfigError("ensemble members were trained on different splits: "
                               + ", ".join(f"{run}: {str(meta.get('split_fingerprint'))[:12]}"
                                           for run, (_, _, meta) in zip(runs, loaded)))
    config = ensemble_config([member_config for _, member_config, _ in loaded])
    model = create_model(config)
    for target, (member, _, _) in zip(model.members, loaded):
        target.load_state_dict(member.state_dict())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(cfg.data_dir)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data_dir)}, indent=2))
    save_split(split, out / "split.json")
    fingerprint = split_fingerprint(split)
    meta = {"stage": cfg.stage, "seed": loaded[0][2].get("seed"), "split_fingerprint": fingerprint,
            "params": count_params(model), "train_config": cfg.to_dict(),
            "members": [member_entry(run, meta) for run, (_, _, meta) in zip(runs, loaded)]}
    save_checkpoint(out / "best.pt", model, config, meta=meta)
    log.info("ensemble of %d members, %d parameters, input %d px", len(runs), meta["params"], config.img_size)
    records = load_ham10000(data_dir)
    images = cached_images(records, config.img_size, progress=lambda d, t: callback("cache", done=d, total=t))
    labels = np.array([r.label for r in records])
    report = finalize_run(out, images, labels, split_indices(records, split), fingerprint)
    callback("done", **{k: report["test"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")})
    return report
