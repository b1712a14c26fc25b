"""`core.release` assembles weights/ and a manifest whose every number comes from a command."""

import json
import shutil

import pytest

from core.models.checkpoint import sha256_file
from core.registry.loader import load_model
from core.release import __main__ as release
from tests.conftest import FIXTURE, ROOT

ENTRY_KEYS = {"file", "sha256", "file_bytes", "params", "input_size", "command", "seed", "split_fingerprint", "date",
              "calibration", "test"}


@pytest.fixture(scope="module")
def released(tiny_runs, tmp_path_factory):
    """A weights folder made by a full release of the tiny teacher and student runs."""
    root = tmp_path_factory.mktemp("released")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERMADISTILL_WEIGHTS", str(root))
        assert release.main(["--teacher-run", str(tiny_runs / "teacher"), "--student-run", str(tiny_runs / "mskd_lf"),
                             "--ablation", str(tiny_runs / "mskd_lf"), "--data-dir", str(FIXTURE),
                             "--threads", "1"]) == 0
    return root


def test_release_writes_a_complete_manifest(released, tiny_runs, tmp_path, monkeypatch):
    shutil.copytree(released, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for name in ("teacher", "student", "quantized"):
        entry = manifest["models"][name]
        assert ENTRY_KEYS <= set(entry)
        assert entry["sha256"] == sha256_file(tmp_path / entry["file"])
        assert entry["split_fingerprint"] == manifest["test_split"]["fingerprint"]
        assert {"ece_before", "ece_after", "temperature"} <= set(entry["calibration"])
        assert set(entry["test"]["ci95"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auc"}
        assert not load_model(name).warnings
    assert manifest["models"]["student"]["command"].startswith("python -m core.train --stage mskd_lf")
    assert [r["stage"] for r in manifest["ablation"]] == ["mskd_lf", "teacher", "quantized"]
    row = manifest["ablation"][0]  # a distilled run names its teacher and is evaluated on both held-out sets
    tiny = "img size 64, batch size 4, warmup epochs 0"  # the tiny runs' changes to the recipe, named
    assert row["name"] == f"multi-stage KD + layer fusion from the single teacher, {tiny}, 1 epoch"
    recorded = json.loads((tiny_runs / "mskd_lf" / "config.json").read_text())  # the name comes from this record
    assert (recorded["teacher_sha256"], recorded["teacher_members"]) == (sha256_file(recorded["teacher"]), 0)
    assert row["balanced_accuracy"] == manifest["models"]["student"]["test"]["balanced_accuracy"]
    assert (row["external"] is None) == (manifest["external"] is None)
    assert manifest["bench"]["models"]["quantized"]["executed_ops"].get("QLinearConv", 0) > 0
    assert sum(manifest["test_split"]["class_counts"]["test"].values()) == manifest["test_split"]["n"]


def test_a_teacher_only_release_ships_the_ensemble_and_keeps_the_student(released, ensemble_run, tmp_path,
                                                                         monkeypatch):
    shutil.copytree(released, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(tmp_path))
    first = json.loads((tmp_path / "manifest.json").read_text())
    assert release.main(["--teacher-run", str(ensemble_run / "ensemble"), "--data-dir", str(FIXTURE),
                         "--threads", "1"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    teacher, student = manifest["models"]["teacher"], manifest["models"]["student"]
    assert teacher["arch"] == "teacher_ensemble" and teacher["command"].startswith("python -m core.train --stage ensemble")
    assert student["command"] == first["models"]["student"]["command"] and "calibration_command" in student
    assert "calibration_command" not in teacher
    # each model names where its weights come from: the new teacher, the kept student, int8 rebuilt from it
    assert "re-calibrated" not in teacher["source"] and student["source"].endswith("(re-calibrated shipped weights)")
    assert manifest["models"]["quantized"]["source"].endswith("(rebuilt from the re-calibrated shipped student)")
    assert load_model("teacher").config.arch == "teacher_ensemble"
    members = [r for r in manifest["ablation"] if r["stage"] == "teacher_member"]
    assert [r["input_size"] for r in members] == [64, 80]
    assert "efficientnet-lite1 trunk" in members[1]["name"] and "--trunk efficientnet_lite1" in members[1]["command"]
    assert [r["stage"] for r in manifest["ablation"]] == ["mskd_lf", "teacher_member", "teacher_member", "teacher",
                                                           "quantized"]
    # the model card and Compare describe the ensemble and its members
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_resource.clear()
    for page, expected in (("pages/about.py", "The teacher is an ensemble"), ("pages/compare.py", "teacher member 2")):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.run()
        at.switch_page(page)
        at.run()
        assert not at.exception
        shown = "\n".join(e.value for kind in ("markdown", "caption") for e in getattr(at, kind))
        shown += "\n".join(str(df.value) for df in at.dataframe)
        assert expected in shown, page


def test_ablation_alone_adds_a_lever_row_and_changes_nothing_else(released, tmp_path_factory, monkeypatch):
    """`core.release --ablation RUN` alone: the run (here the student alone, with Shades-of-Gray colour constancy
    and fully balanced sampling, which it was trained with end to end) is evaluated into the shipped manifest; the
    weights and every other row stay; a second call replaces its row in place; a run of another split is refused."""
    from core.data.split import load_split, save_split
    from tests.conftest import train_tiny

    weights = tmp_path_factory.mktemp("lever_weights")
    shutil.copytree(released, weights, dirs_exist_ok=True)
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(weights))
    run = tmp_path_factory.mktemp("lever") / "student_sog"
    train_tiny("student", run, colour_constancy="shades_of_gray", balance_power=1.0)
    assert load_model(run / "best.pt").config.colour_constancy == "shades_of_gray"  # travels with the weights
    external = tmp_path_factory.mktemp("lever_external")  # a labelled external folder, so the column is measured
    (external / "images").mkdir()
    rows = ["image_id,dx"]
    for i, path in enumerate(sorted((FIXTURE / "images").glob("*.jpg"))[:14]):
        (external / "images" / path.name).write_bytes(path.read_bytes())
        rows.append(f"{path.stem},{('mel', 'nv')[i % 2]}")
    (external / "labels.csv").write_text("\n".join(rows) + "\n")
    command = ["--ablation", str(run), "--data-dir", str(FIXTURE), "--external-dir", str(external)]
    before = json.loads((weights / "manifest.json").read_text())
    rollback_copy = {p.name: p.read_bytes() for p in (weights / "previous").iterdir()}
    for _ in range(2):
        assert release.main(command) == 0
    after = json.loads((weights / "manifest.json").read_text())
    assert after["models"] == before["models"] and after["bench"] == before["bench"]
    assert [r for r in after["ablation"] if r.get("run") != str(run)] == before["ablation"]  # one row added, once
    assert [r["stage"] for r in after["ablation"]][-3:] == ["student", "teacher", "quantized"]  # before the shipped
    assert {p.name: p.read_bytes() for p in (weights / "previous").iterdir()} == rollback_copy  # rollback kept
    row = next(r for r in after["ablation"] if r.get("run") == str(run))
    assert row["name"] == ("student alone (no teacher), img size 64, batch size 4, balance power 1.0, warmup epochs 0, "
                           "colour constancy shades_of_gray, 1 epoch")
    assert row["external"]["referral_90"].keys() == {"sensitivity", "specificity"}  # at the run's own 90% point
    assert "--colour-constancy shades_of_gray" in row["command"]
    other = load_split(run / "split.json")
    other["test"], other["train"] = other["test"][1:], other["train"] + other["test"][:1]
    save_split(other, run / "split.json")
    assert release.main(command) == 2 and json.loads((weights / "manifest.json").read_text()) == after
