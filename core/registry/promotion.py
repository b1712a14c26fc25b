"""The active models in weights/: manifest entries, the one staged writer, promotion of a finished run,
one-step rollback.

Every write (promotion, release, rollback) stages its files in weights/.staging/ under the weights lock,
copies the current files to weights/previous/, then swaps each file in with os.replace, manifest last.
A crash at any moment leaves every file whole: until the manifest is swapped, a new file's sha256
disagrees with the old manifest and the loader serves weights/previous/ instead.
Training never writes to weights/ at all.
"""

import datetime as dt
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from core.data.ham10000 import load_external, load_ham10000
from core.data.split import load_split, split_fingerprint, split_indices
from core.evaluation.report import records_report
from core.filelock import exclusive_lock
from core.models.checkpoint import CheckpointError, load_checkpoint, sha256_file
from core.paths import resolve_data_dir, resolve_external_dir, weights_dir
from core.registry.int8 import build_quantized, quantize_command
from core.registry.loader import SHIPPED_FILES, load_model, read_manifest
from core.training.config import TrainConfig


class PromotionError(ValueError):
    """A promotion refused before anything was written; the message says why and what to do."""


def training_command(config: dict) -> str:
    """The exact `python -m core.train` command line that reproduces a run's config.json."""
    return TrainConfig.from_dict(config).command()


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
        **({"members": meta["members"]} if meta.get("members") else {}),
    }


def evaluate_entry(path: Path, name: str, split: dict, records, command: str, external_records=None,
                   gate=None) -> dict:
    """Manifest entry of a weight file, with its report on the split's test images (CIs over lesions) and,
    when given, on the external validation set (never used to fit anything here). `gate`: the model whose
    feature test also screens this one's inputs in the app (core.registry.loader.GATES)."""
    classifier = load_model(path)
    classifier.name, classifier.gate = name, gate
    entry = model_entry(path, classifier, records_report(classifier, records, split_indices(records, split)["test"]),
                        command, split)
    if external_records:
        entry["external"] = records_report(classifier, external_records)
    return entry


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def _active_files(root: Path, manifest: dict) -> list:
    names = [manifest.get("models", {}).get(m, {}).get("file", SHIPPED_FILES[m]) for m in SHIPPED_FILES]
    return [n for n in names if (root / n).is_file()] + (["manifest.json"] if (root / "manifest.json").is_file() else [])


def _swap_in(staging: Path, root: Path, files) -> None:
    for name in sorted(files, key=lambda n: n == "manifest.json"):  # manifest last
        os.replace(staging / name, root / name)


@contextmanager
def staged_weights(root=None, keep_previous: bool = True):
    """The one writer of weights/. Under the weights lock, yields an empty staging folder; on a clean exit the
    files left there (manifest.json among them) replace the active ones, manifest last, after every active
    file has been kept in weights/previous/ for rollback (`keep_previous=False`: for a manifest-only change of the
    same models, which must not overwrite the earlier version a rollback returns to). An error leaves the active
    files untouched."""
    root = Path(root or weights_dir())
    with exclusive_lock(root / ".lock"):  # promotions, releases and rollbacks never interleave
        staging = root / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            yield staging
            if keep_previous:
                previous = root / "previous"
                previous.mkdir(exist_ok=True)
                for name in _active_files(root, read_manifest(root)):
                    _copy_atomic(root / name, previous / name)
            _swap_in(staging, root, [p.name for p in staging.iterdir()])
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def check_same_split(split: dict, manifest: dict, what: str) -> None:
    """Refuse a model trained on another split than the shipped one: the gallery, the Learn cases and every
    held-out figure would then possibly be its training images."""
    expected = manifest.get("test_split", {}).get("fingerprint")
    if expected and split_fingerprint(split) != expected:
        raise PromotionError(
            f"{what} used another data split (fingerprint {split_fingerprint(split)[:12]}, active models "
            f"{expected[:12]}): the held-out images shown in the app could be its training images. Train with the "
            f"same data folder and seed ({manifest['test_split'].get('seed')}) to promote it.")


def run_summary(run_dir) -> dict:
    """What the Train page compares before a promotion: validation figures from the run's calibration, and
    whether it trained on the full data set."""
    report = json.loads((Path(run_dir) / "report.json").read_text())
    return summary_of(report["calibration"], demo=bool(report.get("demo")))


def summary_of(calibration: dict, demo: bool = False) -> dict:
    mode = "tta" if calibration.get("tta") else "plain"
    triage = calibration.get("referral", {}).get("0.90", {})
    return {"val_balanced_accuracy": calibration.get(f"val_balanced_accuracy_{mode}"),
            "val_triage_sensitivity": triage.get("val_sensitivity"),
            "val_triage_specificity": triage.get("val_specificity"), "demo": demo}


def candidate_external(run_dir, external_dir=None) -> dict:
    """A run's best student on the external validation set (summary figures and triage), or {} without the set."""
    external = external_records(external_dir)
    if not external:
        return {}
    report = records_report(load_model(Path(run_dir) / "best.pt"), external)
    triage = report.get("triage", {}).get("0.90", {})
    return {"external_balanced_accuracy": report["balanced_accuracy"],
            "external_triage_sensitivity": triage.get("sensitivity"),
            "external_triage_specificity": triage.get("specificity")}


def active_summary(root=None) -> dict:
    """The active student's figures, in the shape of `run_summary`, plus its held-out ones."""
    entry = read_manifest(root).get("models", {}).get("student", {})
    summary = summary_of(entry.get("calibration", {}), demo=bool(entry.get("demo")))
    if "external" in entry:
        triage = entry["external"].get("triage", {}).get("0.90", {})
        summary.update({"external_balanced_accuracy": entry["external"]["balanced_accuracy"],
                        "external_triage_sensitivity": triage.get("sensitivity"),
                        "external_triage_specificity": triage.get("specificity")})
    return summary


def promote(run_dir, data_dir=None, root=None, progress=lambda msg: None, confirmed: bool = False,
            reason: str = "", external_dir=None) -> dict:
    """Make a finished run's best student (and an int8 version built from it) the active models.

    Needs `confirmed` (the admin saw the comparison) and, for a run below the active student's validation
    balanced accuracy, a typed `reason`; both are recorded in the manifest. The run must use the shipped split.
    """
    run_dir, root = Path(run_dir), Path(root or weights_dir())
    if not confirmed:
        raise PromotionError("promotion needs an explicit confirmation after comparing the run with the active model")
    best = run_dir / "best.pt"
    if not (run_dir / "report.json").is_file() or not best.is_file():
        raise CheckpointError(f"{run_dir} is not a finished run (best.pt and report.json needed)")
    _, config, meta = load_checkpoint(best)
    if config.arch != "hybrid_cnn_efficientnet":
        raise CheckpointError(f"{run_dir} trained a {config.arch}; only student runs can be promoted")
    candidate, active = run_summary(run_dir), active_summary(root)
    worse = (active["val_balanced_accuracy"] is not None
             and (candidate["val_balanced_accuracy"] or 0) < active["val_balanced_accuracy"])
    if worse and not reason.strip():
        raise PromotionError(
            f"the run's validation balanced accuracy ({candidate['val_balanced_accuracy'] or 0:.3f}) is below the "
            f"active student's ({active['val_balanced_accuracy']:.3f}): give a reason to promote it anyway")
    run_config = json.loads((run_dir / "config.json").read_text())
    data_dir = resolve_data_dir(data_dir or run_config.get("data_dir"))
    records = load_ham10000(data_dir)
    split = load_split(run_dir / "split.json")
    check_same_split(split, read_manifest(root), f"run {run_dir.name}")
    external = external_records(external_dir)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with staged_weights(root) as staging:
        progress("copying the student")
        shutil.copyfile(best, staging / "student.pt")
        progress("quantizing to int8 (ONNX Runtime, calibrated on training images)")
        build_quantized(staging / "student.pt", split, records, staging / "quantized.onnx")
        progress("evaluating on the run's test split" + (" and the external validation set" if external else ""))
        command = training_command(run_config)
        manifest = read_manifest(root)
        manifest.setdefault("models", {})
        source = f"promoted from run {run_dir.name} on {now}"
        for name, file, cmd in (("student", "student.pt", command),
                                ("quantized", "quantized.onnx", quantize_command(run_dir, data_dir))):
            entry = evaluate_entry(staging / file, name, split, records, cmd, external)
            manifest["models"][name] = {**entry, "source": source, "demo": candidate["demo"]}
        manifest["promoted_from"] = str(run_dir)
        manifest["promoted_at"] = now
        manifest.setdefault("promotions", []).append(
            {"run": str(run_dir), "at": now, "candidate": candidate, "replaced": active,
             "reason": reason.strip() or None})
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        progress("swapping the active models")
    return manifest


def external_records(external_dir=None):
    """The external validation set's records, or None when the folder is absent (reports then skip it)."""
    path = resolve_external_dir(external_dir)
    return load_external(path) if (path / "labels.csv").is_file() else None


def has_previous(root=None) -> bool:
    return (Path(root or weights_dir()) / "previous" / "manifest.json").is_file()


def rollback(root=None) -> dict:
    """Swap the active models with the previous version (a second rollback undoes it)."""
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
