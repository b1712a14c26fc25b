"""The release: assemble the shipped models and weights/manifest.json through the one staged writer of weights/
(CLI: `python -m core.release`).

  python -m core.release --teacher-run runs/teacher --student-run runs/mskd_lf \\
      --ablation runs/student,runs/kd,runs/mskd,runs/mskd_lf --data-dir DIR
  python -m core.release --teacher-run runs/teacher_ensemble --data-dir DIR   # new teacher, shipped student
  python -m core.release --recalibrate --data-dir DIR
  python -m core.release --ablation runs/a,runs/b --data-dir DIR   # rows only: evaluates the runs into the manifest
  python -m core.release --tables          # the manifest's headline tables, as README and docs quote them

From runs: takes each given run's best.pt. A role without a run (all of them with --recalibrate) keeps its
shipped weights and re-fits what the file stores about answers (temperature, uncertain and referral
thresholds, feature-distance test) on the shipped split's validation images. Either way it re-fits both,
builds the int8 model, evaluates all three on the held-out test split (lesion-resampled CIs) and on the
external validation set when present, benchmarks the staged models, and writes the manifest: per model
file, sha256, params, size, input size, commands, seed, split fingerprint, date, calibration, test and
external reports; plus the ablation table (an ensemble teacher's members each get a row, evaluated from their
own files) and the bench result.
"""

import datetime as dt
import json
import logging
from dataclasses import fields
from pathlib import Path

from core.classes import CLASSES
from core.data.cache import cached_images
from core.data.external_sample import sample_ids
from core.data.ham10000 import load_ham10000
from core.data.split import load_split, recompute_split, split_fingerprint, split_indices
from core.evaluation.inference import fit_model_calibration
from core.evaluation.report import SUMMARY, default_triage
from core.explain.chosen import carry_over
from core.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from core.paths import resolve_data_dir, weights_dir
from core.registry.bench import run_bench
from core.registry.int8 import build_quantized, quantize_command
from core.registry.loader import GATES, load_model, read_manifest
from core.registry.promotion import evaluate_entry, external_records, staged_weights, training_command
from core.training.config import EXECUTION_FIELDS, TrainConfig

ABLATION_LABELS = {"student": "student alone (no teacher)", "kd": "single-stage KD", "mskd": "multi-stage KD",
                   "mskd_lf": "multi-stage KD + layer fusion"}
RECALIBRATE_COMMAND = "python -m core.release --recalibrate --data-dir {data_dir}"


def class_counts(split: dict, records) -> dict:
    """{split name: {class: images}} for the model card."""
    dx = {r.image_id: r.dx for r in records}
    return {part: {c: sum(dx[i] == c for i in split[part]) for c in CLASSES} for part in ("train", "val", "test")}


def run_config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def calibrated_copy(src: Path, dst: Path, records, split: dict) -> None:
    """Write `src` to `dst` with calibration, referral thresholds and feature-distance test re-fitted on
    the split (weights unchanged)."""
    model, config, meta = load_checkpoint(src)
    images = cached_images(records, config.img_size)
    labels = [r.label for r in records]
    fitted = fit_model_calibration(model.logits_and_features, config, images, labels, split_indices(records, split))
    save_checkpoint(dst, model, config, meta={**meta, **fitted})


def teacher_label(config: dict) -> str:
    """Which teacher a distilled run learned from, for its row's name, as its config.json recorded it at
    training time: ' from the N-member ensemble teacher' or ' from the single teacher'; a run that predates the
    record names its teacher's path (the file there may since have been replaced); empty without a teacher."""
    members = config.get("teacher_members")
    if members is None:  # recorded by path only: name the path, not what the file there is today
        return f" from the teacher file {config['teacher']}" if config.get("teacher") else ""
    return f" from the {members}-member ensemble teacher" if members else " from the single teacher"


NOT_IN_ROW_NAME = ("stage", "out", "data_dir", "epochs", "teacher", "members", *EXECUTION_FIELDS)


def recipe_changes(config: dict) -> str:
    """What a run changed from the default recipe of its stage, for its row's name (', balance power 1.0'); the
    epochs and the teacher are named separately, and where the data came from or how the run was executed is no
    recipe."""
    train = TrainConfig.from_dict(config)
    default = TrainConfig(stage=train.stage, out="")
    changed = [f"{f.name.replace('_', ' ')} {getattr(train, f.name)}" for f in fields(TrainConfig)
               if f.name not in NOT_IN_ROW_NAME and getattr(train, f.name) != getattr(default, f.name)]
    return "".join(f", {change}" for change in changed)


def ablation_runs(ablation: str, split: dict) -> list:
    """The run folders of a comma-separated `--ablation`, checked before any work: each a finished run of this
    split (a run of another split could have trained on the test images its row would be scored on)."""
    runs = [Path(r) for r in ablation.split(",") if r]
    for run in runs:
        if not ((run / "best.pt").is_file() and (run / "split.json").is_file() and (run / "config.json").is_file()):
            raise ReleaseError(f"{run} is not a finished training run (best.pt, split.json and config.json needed)")
        if split_fingerprint(load_split(run / "split.json")) != split_fingerprint(split):
            raise ReleaseError(f"{run} was trained on another split than the release's test split")
    return runs


def ablation_rows(runs, lat: dict, split: dict, records, external) -> list:
    """One row per student run (checked by `ablation_runs`): its best.pt evaluated like the shipped models, on
    the test split and the external set."""
    rows = []
    for run in runs:
        config = run_config(run)
        label = ABLATION_LABELS.get(config["stage"], config["stage"]) + teacher_label(config) + recipe_changes(config)
        epochs = f"{config['epochs']} epoch" + ("s" if config["epochs"] != 1 else "")
        entry = evaluate_entry(run / "best.pt", config["stage"], split, records, training_command(config), external)
        rows.append(evaluated_row(f"{label}, {epochs}", config["stage"], entry, epochs=config["epochs"],
                                  run=str(run), latency_ms_p50=lat["student"]))
    return rows


def merged_ablation(recorded: list, fresh: list) -> list:
    """The recorded rows with each fresh row in place of the row of the same run, new runs after them."""
    fresh = {row["run"]: row for row in fresh}
    rows = [fresh.pop(r.get("run"), r) for r in recorded]
    return rows + list(fresh.values())


def shipped_split(records, manifest: dict) -> dict:
    """The split the shipped models were trained and tested on, rebuilt from the manifest's seed and checked
    against its fingerprint."""
    return recompute_split(records, manifest["test_split"]["seed"], manifest["test_split"]["fingerprint"])


def add_ablation(ablation: str, data_dir=None, external_dir=None) -> list:
    """Evaluate student runs on the shipped models' test split and the external set and write their rows into the
    shipped manifest's ablation, through the one writer of weights/; weights, calibration, the rollback copy and
    every other figure stay as released (`--recalibrate --ablation` re-fits and re-measures everything instead)."""
    root = weights_dir()
    old = read_manifest(root)
    records = load_ham10000(resolve_data_dir(data_dir))
    split = shipped_split(records, old)
    runs = ablation_runs(ablation, split)
    lat = {k: v["latency_ms_p50"] for k, v in old["bench"]["models"].items()}
    fresh = ablation_rows(runs, lat, split, records, external_records(external_dir))
    with staged_weights(root, keep_previous=False) as staging:
        current = read_manifest(root)  # under the lock: a promotion or release meanwhile wins
        if current.get("models") != old.get("models"):
            raise ReleaseError("the shipped models changed while the runs were evaluated; run the command again")
        shipped = [r for r in current["ablation"] if r["stage"] in ("teacher", "quantized")]
        rows = merged_ablation([r for r in current["ablation"] if r not in shipped], fresh) + shipped
        (staging / "manifest.json").write_text(json.dumps({**current, "ablation": rows}, indent=1))
    return fresh


def evaluated_row(name: str, stage: str, entry: dict, **extra) -> dict:
    """An ablation row from an evaluate_entry() result: test figures, external figures (None when the external
    set is absent), size and command."""
    return {"name": name, "stage": stage, **{k: entry["test"][k] for k in SUMMARY},
            "external": external_summary(entry["external"]) if "external" in entry else None,
            "params": entry["params"], "file_bytes": entry["file_bytes"], "command": entry["command"], **extra}


def external_summary(report: dict) -> dict:
    """An ablation row's external figures: the summary metrics and their 95% intervals, and the referral flag's
    sensitivity and specificity at the model's own 90% (validation) point."""
    triage = default_triage(report)
    return {**{k: report[k] for k in SUMMARY}, "ci95": report["ci95"],
            "referral_90": {k: triage[k] for k in ("sensitivity", "specificity")} if triage else None}


def shipped_rows(models: dict, lat: dict) -> list:
    """Ablation rows of the shipped teacher and int8 student, with both held-out columns."""
    rows = []
    for name, label in (("teacher", "teacher"), ("quantized", "quantized student (int8)")):
        m = models[name]
        row = {"name": label, "stage": name, **{k: m["test"][k] for k in SUMMARY}, "params": m["params"],
               "file_bytes": m["file_bytes"], "latency_ms_p50": lat[name], "command": m["command"]}
        if "external" in m:
            row["external"] = external_summary(m["external"])
        rows.append(row)
    return rows


def member_rows(teacher_file: Path, split: dict, records, external) -> list:
    """Ablation rows of an ensemble teacher's members, each evaluated from its own file (with the calibration its
    run fitted) on both held-out sets; none for a single teacher."""
    rows = []
    for i, member in enumerate(read_checkpoint(teacher_file)["meta"].get("members", []), 1):
        path = Path(member["file"])
        if not path.is_file():
            raise ReleaseError(f"teacher member {i} ({path}) is needed for its ablation row but not found")
        entry = evaluate_entry(path, f"teacher member {i}", split, records, member["command"], external)
        trunk = entry["pretrained"]["trunk"]["package"].removesuffix("-pytorch-model")
        epochs = read_checkpoint(path)["meta"]["train_config"]["epochs"]
        rows.append(evaluated_row(f"teacher member {i}: {trunk} trunk, {entry['input_size']} px, {epochs} epochs",
                                  "teacher_member", entry, input_size=entry["input_size"]))
    return rows


class ReleaseError(ValueError):
    """The runs given cannot make one release (say, they were trained on different splits)."""


def release(*, teacher_run=None, student_run=None, ablation: str = "", data_dir=None, external_dir=None,
            scratch_teacher=None, scratch_teacher_commit: str = "", threads: int = 2) -> dict:
    """Build, evaluate and benchmark the release in a staging folder, then swap it into weights/.

    A role without a run keeps its shipped weights, re-fitted (no run at all: `--recalibrate`).
    Returns the manifest's per-model entries."""
    data_dir_arg = data_dir
    data_dir = resolve_data_dir(data_dir_arg)
    root = weights_dir()
    records = load_ham10000(data_dir)
    old = read_manifest(root)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    runs = {name: Path(run) for name, run in (("teacher", teacher_run), ("student", student_run)) if run}
    kept = [name for name in ("teacher", "student") if name not in runs]  # shipped weights, re-fitted
    split = load_split(next(iter(runs.values())) / "split.json") if runs else shipped_split(records, old)
    fingerprints = {split_fingerprint(load_split(run / "split.json")) for run in runs.values()}
    if kept:
        fingerprints.add(old["test_split"]["fingerprint"])
    if len(fingerprints | {split_fingerprint(split)}) != 1:
        raise ReleaseError("the runs and the shipped models that stay were trained on different splits")
    ablation_students = ablation_runs(ablation, split)
    sources = {name: runs[name] / "best.pt" if name in runs else root / f"{name}.pt" for name in ("teacher", "student")}
    commands = {name: training_command(run_config(runs[name])) if name in runs else old["models"][name]["command"]
                for name in sources}
    student_origin = runs.get("student") or Path(old["models"]["student"]["command"].rsplit("--out ", 1)[-1])
    external = external_records(external_dir)
    release_name = f"release of {created}"
    source = {name: release_name + (" (re-calibrated shipped weights)" if name in kept else "") for name in sources}
    source["quantized"] = release_name + (" (rebuilt from the re-calibrated shipped student)"
                                          if "student" in kept else "")
    with staged_weights(root) as staging:
        for name, src in sources.items():
            logging.info("calibrating %s", name)
            calibrated_copy(src, staging / f"{name}.pt", records, split)
        logging.info("quantizing")
        build_quantized(staging / "student.pt", split, records, staging / "quantized.onnx")
        commands["quantized"] = quantize_command(student_origin, data_dir_arg or data_dir)
        models = {}
        for name, file in (("teacher", "teacher.pt"), ("student", "student.pt"), ("quantized", "quantized.onnx")):
            logging.info("evaluating %s", name)
            gate = load_model(staging / f"{GATES[name]}.pt") if name in GATES else None
            entry = evaluate_entry(staging / file, name, split, records, commands[name], external, gate)
            if name in kept:
                entry["calibration_command"] = RECALIBRATE_COMMAND.format(data_dir=data_dir_arg or data_dir)
            models[name] = {**entry, "source": source[name]}
        manifest = {"version": 1, "created": created,
                    "test_split": {"name": "test", "n": len(split["test"]), "seed": split["seed"],
                                   "fingerprint": split_fingerprint(split),
                                   "grouping": "lesion_id (and byte-identical images), stratified by dx",
                                   "class_counts": class_counts(split, records)},
                    "external": {"name": "ISIC 2018 Task 3 test, 504-image external validation subset, without the "
                                         f"{len(sample_ids())} images shipped in assets/external_sample.zip",
                                 "n": len(external)} if external else None,
                    "models": models}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        logging.info("benchmarking")
        bench = run_bench(threads=threads, root=staging)
        manifest["bench"] = {**bench, "command": f"python -m core.bench --threads {threads}"}
        lat = {k: v["latency_ms_p50"] for k, v in bench["models"].items()}
        # rows of runs not given here keep the figures recorded at their release; shipped rows are re-measured
        recorded = [r for r in old.get("ablation", []) if r["stage"] not in ("teacher", "quantized")]
        rows = merged_ablation([r for r in recorded if r["stage"] != "teacher_member"],
                               ablation_rows(ablation_students, lat, split, records, external))
        rows += (member_rows(staging / "teacher.pt", split, records, external) if "teacher" in runs else
                 [r for r in recorded if r["stage"] == "teacher_member"])
        if scratch_teacher:
            entry = evaluate_entry(Path(scratch_teacher), "teacher_scratch", split, records,
                                   training_command(read_checkpoint(scratch_teacher)["meta"].get("train_config", {})))
            if scratch_teacher_commit:
                entry["command"] = f"git checkout {scratch_teacher_commit} && {entry['command']}"
            rows.append({"name": f"teacher from scratch (no ImageNet weights; {entry['arch']}, "
                                 f"{entry['input_size']} px)", "stage": "teacher_scratch",
                         **{k: entry["test"][k] for k in SUMMARY}, "params": entry["params"],
                         "file_bytes": entry["file_bytes"], "input_size": entry["input_size"],
                         "command": entry["command"]})
        manifest["ablation"] = rows + shipped_rows(models, lat)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for name in kept:  # same weights: the explanation settings searched for the old files still apply
        carry_over(old["models"][name]["sha256"], models[name]["sha256"], f"re-calibrated by {release_name}")
    return models
