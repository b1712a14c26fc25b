"""The evaluate, bench, predict and train CLIs on the fixture with tiny weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.bench import __main__ as bench
from core.classes import CLASSES
from core.evaluation import __main__ as evaluate
from core.evaluation.report import paired_difference
from core.predict import __main__ as predict
from tests.conftest import FIXTURE, ROOT

EVAL_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "auc", "per_class", "confusion_matrix", "classes", "n", "tta",
             "ece", "reliability", "roc", "triage", "not_dermoscopic_fraction", "ci95", "ci_resamples"}
IMAGE = next((FIXTURE / "images").glob("*.jpg"))


@pytest.mark.parametrize("model", ["teacher", "student", "quantized"])
def test_evaluate_writes_exact_schema(use_weights, tmp_path, capsys, model):
    out = tmp_path / "m.json"
    assert evaluate.main(["--model", model, "--images", str(FIXTURE), "--labels",
                          str(FIXTURE / "HAM10000_metadata.csv"), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == EVAL_KEYS
    assert metrics["n"] == 42 and len(metrics["confusion_matrix"]) == 7
    assert sum(map(sum, metrics["confusion_matrix"])) == 42
    assert 0 <= metrics["balanced_accuracy"] <= 1
    assert set(metrics["triage"]) == {"0.90", "0.95"}
    for figures in metrics["triage"].values():
        assert {"threshold", "target_sensitivity", "sensitivity", "specificity", "ci95"} <= set(figures)


def test_paired_difference_is_zero_for_a_model_against_itself_and_sees_a_better_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(CLASSES), 210)
    noisy = rng.dirichlet(np.ones(len(CLASSES)), len(y))
    better = 0.5 * noisy + 0.5 * np.eye(len(CLASSES))[y]
    same = paired_difference(y, noisy, noisy, CLASSES, thresholds=(0.5, 0.5), n_boot=100)
    assert all(v["difference"] == 0 and v["ci95"] == [0, 0] and v["b_ahead_fraction"] == 0 for v in same.values())
    ahead = paired_difference(y, noisy, better, CLASSES, groups=np.arange(len(y)) // 3, n_boot=100)
    assert ahead["balanced_accuracy"]["ci95"][0] > 0 and ahead["balanced_accuracy"]["b_ahead_fraction"] == 1
    assert "referral_sensitivity" not in ahead  # no thresholds given


def test_evaluate_versus_reports_both_models_and_their_paired_difference(use_weights, tmp_path):
    out = tmp_path / "versus.json"
    assert evaluate.main(["--model", "student", "--versus", "quantized", "--images", str(FIXTURE), "--labels",
                          str(FIXTURE / "HAM10000_metadata.csv"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["model"], result["versus"], result["n"]) == ("student", "quantized", 42)
    assert set(result["reports"]["quantized"]) == EVAL_KEYS  # each report as a single-model run writes it
    difference = result["difference_versus_minus_model"]
    assert set(difference) == {"accuracy", "balanced_accuracy", "macro_f1", "auc", "referral_sensitivity",
                               "referral_specificity"}
    reports = result["reports"]
    assert difference["balanced_accuracy"]["difference"] == pytest.approx(
        reports["quantized"]["balanced_accuracy"] - reports["student"]["balanced_accuracy"])


def test_evaluate_plots_and_external_shortcut(use_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("DERMADISTILL_EXTERNAL_DIR", str(tmp_path / "ext"))
    (tmp_path / "ext" / "images").mkdir(parents=True)
    rows = ["image_id,dx"]
    for path in sorted((FIXTURE / "images").glob("*.jpg"))[:14]:
        (tmp_path / "ext" / "images" / path.name).write_bytes(path.read_bytes())
        rows.append(f"{path.stem},{'mel' if len(rows) % 2 else 'nv'}")
    (tmp_path / "ext" / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ext.json"
    assert evaluate.main(["--model", "student", "--external", "--json", str(out), "--plots", str(tmp_path / "p")]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 14 and report["ci_resamples"] == "images (one per lesion)"  # no lesion_id column
    for name in ("reliability.png", "roc.png"):
        assert (tmp_path / "p" / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_names_missing_images_and_unknown_labels(use_weights, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,dx\nISIC_missing1,mel\nISIC_0000000,cancer\n")
    assert evaluate.main(["--images", str(FIXTURE), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "ISIC_missing1" in err and "cancer" in err and "Traceback" not in err


def test_bench_schema(use_weights, tmp_path):
    """Every model's figures, and the student/teacher latency ratio within each runtime (the teacher's ONNX twin
    exported for it); no timing is asserted."""
    out = tmp_path / "b.json"
    names = ["teacher", "teacher_ort_fp32", "student", "student_ort_fp32", "quantized"]
    assert bench.main(["--models", ",".join(names), "--runs", "50", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["cpu"]
    for name in names:
        m = result["models"][name]
        assert m["latency_ms_p95"] >= m["latency_ms_p50"] > 0
        assert m["params"] > 0 and m["file_bytes"] > 0 and m["throughput_ips_b32"] > 0
        assert m["runtime"] == ("onnxruntime" if name.endswith("_ort_fp32") or name == "quantized" else "pytorch")
    assert result["models"]["student"]["input_size"] == 64 and result["models"]["student"]["gflops_per_image"] > 0
    models, ratios = result["models"], result["student_over_teacher_latency"]
    assert ratios == {"pytorch": models["student"]["latency_ms_p50"] / models["teacher"]["latency_ms_p50"],
                      "onnxruntime": models["student_ort_fp32"]["latency_ms_p50"]
                      / models["teacher_ort_fp32"]["latency_ms_p50"]}


def test_bench_upload_times_the_your_images_path(use_weights, tmp_path):
    """`core.bench --upload DIR`: a labelled folder zipped, checked, decoded and evaluated through the work pool,
    with seconds per step and idle / peak memory (the tiny fixture models; no timing is asserted)."""
    import shutil

    from core.data.ham10000 import read_labels

    folder = tmp_path / "clinic"
    (folder / "images").mkdir(parents=True)
    records = read_labels(FIXTURE / "HAM10000_metadata.csv", FIXTURE)
    for r in records:
        shutil.copy(r.path, folder / "images" / f"{r.image_id}.jpg")
    (folder / "labels.csv").write_text("image_id,dx\n" + "".join(f"{r.image_id},{r.dx}\n" for r in records))
    out = tmp_path / "upload.json"
    assert bench.main(["--upload", str(folder), "--models", "student,quantized,student_ort_fp32", "--json",
                       str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == len(records)
    assert set(result["seconds"]) == {"check_and_decode", "until quantized done", "until student done", "evaluate_all"}
    assert result["seconds"]["until quantized done"] <= result["seconds"]["evaluate_all"]  # cheapest model first
    assert result["rss_peak_mb"] > 0 and result["peak_over_idle"] > 0.5


def test_predict_json_and_failures(use_weights, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    code = predict.main([str(IMAGE), str(broken), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    row = json.loads(captured.out.strip().splitlines()[0])
    assert row["label"] in row["probabilities"] and len(row["probabilities"]) == 7
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    assert isinstance(row["uncertain"], bool)
    assert "broken.jpg" in captured.err and "Traceback" not in captured.err


def test_cli_subprocesses_run_as_modules(use_weights, tmp_path):
    env = {**os.environ, "DERMADISTILL_WEIGHTS": str(use_weights), "OMP_NUM_THREADS": "1"}
    for module in ("core.train", "core.evaluate", "core.bench", "core.predict", "core.explain", "core.quantize",
                   "core.release", "core.explain.search", "core.learn", "core.training"):
        r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), module
    r = subprocess.run([sys.executable, "-m", "core.predict", str(IMAGE), str(tmp_path / "nope.png")], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "nope.png" in r.stderr and "Traceback" not in r.stderr
    assert IMAGE.name in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs must be > 0"),
    (["--alpha", "0", "--beta", "0", "--gamma", "0"], "alpha + beta + gamma must be > 0"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--warmup-epochs", "-1"], "warm-up epochs must be between 0 and the number of epochs"),
])
def test_train_refuses_bad_parameters(tmp_path, capsys, args, message):
    from core.training import __main__ as train

    assert train.main(["--stage", "student", "--data-dir", str(FIXTURE), "--out", str(tmp_path / "r"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "best.pt").exists()
