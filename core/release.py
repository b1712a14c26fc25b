"""CLI: assemble the shipped models and weights/manifest.json from finished runs, with the ablation.

  python -m core.release --teacher-run runs/teacher --student-run runs/mskd_lf \
      --ablation runs/student,runs/kd,runs/mskd,runs/mskd_lf --data-dir DIR

Copies the teacher's and student's best.pt into weights/, builds the int8 model, evaluates all three
on the held-out test split (the runs' common lesion-grouped split), runs one `core.bench`, and writes
the manifest: per model its file, sha256, params, size, input size, training command, seed, split
fingerprint, date, calibration and test metrics; plus the ablation table and the bench result.
"""

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
from pathlib import Path

from core.bench import run_bench
from core.classes import CLASSES
from core.data.ham10000 import load_ham10000
from core.data.split import load_split, split_fingerprint
from core.evaluation.report import SUMMARY
from core.models.checkpoint import read_checkpoint
from core.paths import resolve_data_dir, weights_dir
from core.promotion import evaluate_entry, training_command
from core.quantization.build import build_quantized, quantize_command

ABLATION_LABELS = {"student": "student alone (no teacher)", "kd": "single-stage KD", "mskd": "multi-stage KD",
                   "mskd_lf": "multi-stage KD + layer fusion"}


def class_counts(split: dict, records) -> dict:
    """{split name: {class: images}} for the model card."""
    dx = {r.image_id: r.dx for r in records}
    return {part: {c: sum(dx[i] == c for i in split[part]) for c in CLASSES} for part in ("train", "val", "test")}


def run_info(run: Path):
    config = json.loads((run / "config.json").read_text())
    report = json.loads((run / "report.json").read_text())
    return config, report


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m core.release", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-run", required=True)
    p.add_argument("--student-run", required=True)
    p.add_argument("--ablation", default="", help="comma-separated run folders of the student ablation")
    p.add_argument("--data-dir")
    p.add_argument("--scratch-teacher", help="checkpoint of a teacher trained from scratch, evaluated on the same "
                                             "test split as the 'teacher from scratch' ablation row")
    p.add_argument("--scratch-teacher-commit", default="",
                   help="git commit of the code that trained --scratch-teacher, written beside its command")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    root = weights_dir()
    teacher_run, student_run = Path(a.teacher_run), Path(a.student_run)
    split = load_split(student_run / "split.json")
    if split_fingerprint(load_split(teacher_run / "split.json")) != split_fingerprint(split):
        print("error: teacher and student runs used different splits", file=sys.stderr)
        return 2
    shutil.copyfile(teacher_run / "best.pt", root / "teacher.pt")
    shutil.copyfile(student_run / "best.pt", root / "student.pt")
    logging.info("quantizing")
    records = load_ham10000(data_dir)
    build_quantized(root / "student.pt", split, records, root / "quantized.onnx")
    t_config, _ = run_info(teacher_run)
    s_config, _ = run_info(student_run)
    models = {
        "teacher": evaluate_entry(root / "teacher.pt", "teacher", split, records, training_command(t_config)),
        "student": evaluate_entry(root / "student.pt", "student", split, records, training_command(s_config)),
        "quantized": evaluate_entry(root / "quantized.onnx", "quantized", split, records,
                                    quantize_command(student_run, a.data_dir or data_dir)),
    }
    manifest = {"version": 1, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "test_split": {"name": "test", "n": len(split["test"]), "seed": split["seed"],
                               "fingerprint": split_fingerprint(split),
                               "grouping": "lesion_id (and byte-identical images), stratified by dx",
                               "class_counts": class_counts(split, records)},
                "models": models}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    logging.info("benchmarking")
    bench = run_bench(threads=a.threads)
    manifest["bench"] = {**bench, "command": f"python -m core.bench --threads {a.threads}"}
    lat = {k: v["latency_ms_p50"] for k, v in bench["models"].items()}
    rows = []
    for run in [Path(r) for r in a.ablation.split(",") if r]:
        config, report = run_info(run)
        label = ABLATION_LABELS.get(config["stage"], config["stage"])
        epochs = f"{config['epochs']} epoch" + ("s" if config["epochs"] != 1 else "")
        rows.append({"name": f"{label}, {epochs}", "stage": config["stage"],
                     "epochs": config["epochs"], "run": str(run), **{k: report["test"][k] for k in SUMMARY},
                     "params": report["params"],
                     "file_bytes": (run / "best.pt").stat().st_size, "latency_ms_p50": lat["student"],
                     "command": training_command(config)})
    if a.scratch_teacher:
        entry = evaluate_entry(Path(a.scratch_teacher), "teacher_scratch", split, records,
                               training_command(read_checkpoint(a.scratch_teacher)["meta"].get("train_config", {})))
        arch = entry["arch"]
        if a.scratch_teacher_commit:
            entry["command"] = f"git checkout {a.scratch_teacher_commit} && {entry['command']}"
        rows.append({"name": f"teacher from scratch (no ImageNet weights; {arch}, {entry['input_size']} px)",
                     "stage": "teacher_scratch",
                     **{k: entry["test"][k] for k in SUMMARY}, "params": entry["params"],
                     "file_bytes": entry["file_bytes"], "input_size": entry["input_size"], "command": entry["command"]})
    for name in ("teacher", "quantized"):
        m = models[name]
        rows.append({"name": name if name == "teacher" else "quantized student (int8)", "stage": name,
                     **{k: m["test"][k] for k in SUMMARY}, "params": m["params"], "file_bytes": m["file_bytes"],
                     "latency_ms_p50": lat[name], "command": m["command"]})
    manifest["ablation"] = rows
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({r["name"]: {k: round(r[k], 4) for k in SUMMARY} for r in rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
