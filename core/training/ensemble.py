"""Assemble trained teachers into one ensemble run folder: config.json, split.json, best.pt (calibrated on
validation) and report.json (test split), so that release, evaluation and distillation take it like any run.

`python -m core.train --stage ensemble --members runs/a,runs/b.pt --data-dir DIR --out runs/teacher_ensemble`
Members are run folders (their best.pt) or checkpoint files; each file's own record gives its command and
split, and the split is rebuilt from the data and checked against every member's fingerprint.
"""

import json
import logging
from pathlib import Path

import numpy as np

from core.data.cache import cached_images
from core.data.ham10000 import load_ham10000
from core.data.split import recompute_split, save_split, split_fingerprint, split_indices
from core.models.checkpoint import load_checkpoint, sha256_file
from core.models.ensemble import ensemble_config
from core.models.factory import count_params, create_model
from core.paths import resolve_data_dir
from core.training.config import TrainConfig, TrainConfigError
from core.training.trainer import finalize_run, save_run_model

log = logging.getLogger(__name__)


def member_files(members: str) -> list:
    """The checkpoint of each comma-separated member: a run folder's best.pt, or the file itself."""
    paths = [Path(member.strip()) for member in members.split(",") if member.strip()]
    return [path / "best.pt" if path.is_dir() else path for path in paths]


def member_entry(path: Path, meta: dict) -> dict:
    """What the ensemble's file records about one member: its file, hash, command and validation score."""
    return {"file": str(path), "sha256": sha256_file(path), "command": TrainConfig.from_dict(meta["train_config"]).command(),
            "epoch": meta.get("epoch"), "val_balanced_accuracy": meta.get("val", {}).get("val_balanced_accuracy")}


def assemble_ensemble(cfg: TrainConfig, callback) -> dict:
    """Build, calibrate and report the ensemble of `cfg.members`; returns the test report."""
    files = member_files(cfg.members)
    loaded = [load_checkpoint(path) for path in files]
    if len({(meta.get("seed"), meta.get("split_fingerprint")) for _, _, meta in loaded}) != 1:
        raise TrainConfigError("ensemble members were trained on different splits: "
                               + ", ".join(f"{path}: {str(meta.get('split_fingerprint'))[:12]}"
                                           for path, (_, _, meta) in zip(files, loaded)))
    first = loaded[0][2]
    data_dir = resolve_data_dir(cfg.data_dir)
    records = load_ham10000(data_dir)
    split = recompute_split(records, first["seed"], first["split_fingerprint"])
    config = ensemble_config([member_config for _, member_config, _ in loaded])
    model = create_model(config)
    for target, (member, _, _) in zip(model.members, loaded):
        target.load_state_dict(member.state_dict())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data_dir)}, indent=2))
    save_split(split, out / "split.json")
    fingerprint = split_fingerprint(split)
    meta = {"stage": cfg.stage, "seed": first["seed"], "split_fingerprint": fingerprint,
            "params": count_params(model), "train_config": cfg.to_dict(),
            "members": [member_entry(path, meta) for path, (_, _, meta) in zip(files, loaded)]}
    save_run_model(out / "best.pt", model, config, meta=meta)
    log.info("ensemble of %d members, %d parameters, input %d px", len(files), meta["params"], config.img_size)
    images = cached_images(records, config.img_size, progress=lambda d, t: callback("cache", done=d, total=t))
    labels = np.array([r.label for r in records])
    report = finalize_run(out, images, labels, split_indices(records, split), fingerprint)
    callback("done", **{k: report["test"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")})
    return report
