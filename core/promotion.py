"""The active models in weights/: manifest entries, promotion of a finished run, one-step rollback.

Promotion stages the new student, its int8 version and the new manifest in weights/.staging/,
copies the current files to weights/previous/, then swaps each file in with os.replace, manifest
last. A crash at any moment leaves every file whole: until the manifest is swapped, a new file's
sha256 disagrees with the old manifest and the loader serves weights/previous/ instead.
Training never writes to weights/ at all.
"""

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from core.data.cache import cached_images
from core.data.ham10000 import load_ham10000
from core.data.split import load_split, split_fingerprint, split_indices
from core.evaluation.report import split_report
from core.filelock import exclusive_lock
from core.models.checkpoint import CheckpointError, load_checkpoint, sha256_file
from core.models.loader import SHIPPED_FILES, load_model, read_manifest
from core.paths import resolve_data_dir, weights_dir
from core.quantization.build import build_quantized, quantize_command

PROMOTED = ("student", "quantized")


def training_command(config: dict) -> str:
    """The exact `python -m core.train` command line that reproduces a run's config.json."""
    flags = ["stage", "data_dir", "epochs", "img_size", "batch_size", "lr", "weight_decay", "warmup_epochs", "alpha",
             "beta", "gamma", "temperature", "label_smoothing", "balance_power", "ema_decay", "seed"]
    parts = ["python -m core.train"]
    for key in flags:
        if config.get(key) is not None:
            parts.append(f"--{key.replace('_', '-')} {config[key]}")
    if config.get("pretrained") is False:
        parts.append("--no-pretrained")
    if config.get("teacher"):
        parts.append(f"--teacher {config['teacher']}")
    parts.append(f"--out {config['out']}")
    return " ".join(parts)


def model_entry(path: Path, classifier, report: dict, command: str, split: dict) -> dict:
    """One manifest entry: file identity, config, provenance, calibration and test metrics."""
    meta = classifier.meta
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "file_bytes": path.stat().st_size,
        "params": int(meta.get("params", classifier.params)),
        "input_size": classifier.config.img_size,
        "arch": classifier.config.arch,
        "stage": meta.get("stage"),
        "command": command,
        "seed": split["seed"],
        "split_fingerprint": split_fingerprint(split),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pretrained": classifier.config.pretrained,
        "calibration": classifier.calibration,
        "test": report,
    }


def evaluate_entry(path: Path, name: str, split: dict, records, command: str) -> dict:
    """Manifest entry of a weight file, with its metrics on the split's test images."""
    classifier = load_model(path)
    classifier.name = name
    test_idx = split_indices(records, split)["test"]
    images = cached_images(records, classifier.config.img_size)
    labels = np.array([records[i].label for i in test_idx])
    return model_entry(path, classifier, split_report(classifier, images[test_idx], labels), command, split)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def _active_files(root: Path, manifest: dict) -> list:
    names = [manifest.get("models", {}).get(m, {}).get("file", SHIPPED_FILES[m]) for m in PROMOTED]
    return [n for n in names if (root / n).is_file()] + (["manifest.json"] if (root / "manifest.json").is_file() else [])


def _swap_in(staging: Path, root: Path, files) -> None:
    for name in sorted(files, key=lambda n: n == "manifest.json"):  # manifest last
        os.replace(staging / name, root / name)


def promote(run_dir, data_dir=None, root=None, progress=lambda msg: None) -> dict:
    """Make a finished run's best student (and an int8 version built from it) the active models."""
    run_dir, root = Path(run_dir), Path(root or weights_dir())
    best = run_dir / "best.pt"
    if not (run_dir / "report.json").is_file() or not best.is_file():
        raise CheckpointError(f"{run_dir} is not a finished run (best.pt and report.json needed)")
    _, config, meta = load_checkpoint(best)
    if config.arch != "hybrid_cnn_efficientnet":
        raise CheckpointError(f"{run_dir} trained a {config.arch}; only student runs can be promoted")
    run_config = json.loads((run_dir / "config.json").read_text())
    data_dir = resolve_data_dir(data_dir or run_config.get("data_dir"))
    records = load_ham10000(data_dir)
    split = load_split(run_dir / "split.json")
    with exclusive_lock(root / ".lock"):  # promotions and rollbacks never interleave
        staging = root / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        progress("copying the student")
        shutil.copyfile(best, staging / "student.pt")
        progress("quantizing to int8 (ONNX Runtime, calibrated on training images)")
        build_quantized(staging / "student.pt", split, records, staging / "quantized.onnx")
        progress("evaluating on the run's test split")
        command = training_command(run_config)
        manifest = read_manifest(root)
        manifest.setdefault("models", {})
        manifest["models"]["student"] = evaluate_entry(staging / "student.pt", "student", split, records, command)
        manifest["models"]["quantized"] = evaluate_entry(staging / "quantized.onnx", "quantized", split, records,
                                                         quantize_command(run_dir, data_dir))
        manifest["promoted_from"] = str(run_dir)
        manifest["promoted_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        progress("swapping the active models")
        previous = root / "previous"
        previous.mkdir(exist_ok=True)
        for name in _active_files(root, read_manifest(root)):
            _copy_atomic(root / name, previous / name)
        _swap_in(staging, root, ["student.pt", "quantized.onnx", "manifest.json"])
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def has_previous(root=None) -> bool:
    return (Path(root or weights_dir()) / "previous" / "manifest.json").is_file()


def rollback(root=None) -> dict:
    """Swap the active student/int8 models with the previous version (a second rollback undoes it)."""
    root = Path(root or weights_dir())
    previous = root / "previous"
    if not has_previous(root):
        raise CheckpointError("no previous version to roll back to")
    with exclusive_lock(root / ".lock"):  # promotions and rollbacks never interleave
        staging = root / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        current = _active_files(root, read_manifest(root))
        older = _active_files(previous, read_manifest(previous))
        for name in current:
            shutil.copyfile(root / name, staging / name)
        _swap_in(previous, root, older)
        for name in current:
            _copy_atomic(staging / name, previous / name)
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(root)
