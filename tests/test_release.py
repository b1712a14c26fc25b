"""`core.release` assembles weights/ and a manifest whose every number comes from a command."""

import json

from core.models.checkpoint import sha256_file
from core.registry.loader import load_model
from core.release import __main__ as release
from tests.conftest import FIXTURE

ENTRY_KEYS = {"file", "sha256", "file_bytes", "params", "input_size", "command", "seed", "split_fingerprint", "date",
              "calibration", "test"}


def test_release_writes_a_complete_manifest(tiny_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(tmp_path))
    assert release.main(["--teacher-run", str(tiny_runs / "teacher"), "--student-run", str(tiny_runs / "mskd_lf"),
                         "--ablation", str(tiny_runs / "mskd_lf"), "--data-dir", str(FIXTURE), "--threads", "1"]) == 0
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
    assert manifest["ablation"][0]["name"] == "multi-stage KD + layer fusion, 1 epoch"
    assert manifest["bench"]["models"]["quantized"]["executed_ops"].get("QLinearConv", 0) > 0
    assert sum(manifest["test_split"]["class_counts"]["test"].values()) == manifest["test_split"]["n"]
