"""The teacher ensemble: members' averaged answer, a file that rebuilds itself, a usable teacher for distillation
and Grad-CAM, and refusal of members trained on different splits."""

import json

import torch
import torch.nn.functional as F
from PIL import Image

from conftest import ENSEMBLE_WIDE as WIDE
from conftest import FIXTURE, TINY_SIZE, train_tiny
from core.models.checkpoint import load_checkpoint, read_checkpoint
from core.training.__main__ import main as train_main


def test_ensemble_answers_the_members_average_at_their_own_sizes(ensemble_run, tiny_runs):
    ensemble, config, meta = load_checkpoint(ensemble_run / "ensemble" / "best.pt")
    small, _, _ = load_checkpoint(tiny_runs / "teacher" / "best.pt")
    wide, wide_config, _ = load_checkpoint(ensemble_run / "lite1" / "best.pt")
    assert config.arch == "teacher_ensemble" and config.img_size == WIDE
    assert wide_config.arch_kwargs["effnet_arch"] == "efficientnet_lite1"
    # parameters are stored in float16 (one shipped file under 50 MB), statistics in float32; loading gives float32
    stored = read_checkpoint(ensemble_run / "ensemble" / "best.pt")["state_dict"]
    assert {v.dtype for k, v in stored.items() if k.endswith(".weight")} == {torch.float16}
    assert {v.dtype for k, v in stored.items() if k.endswith("running_var")} == {torch.float32}
    assert {p.dtype for p in ensemble.parameters()} == {torch.float32}
    for member in (small, wide):
        for p in member.parameters():
            p.data = p.data.half().float()
    x = torch.randn(2, 3, WIDE, WIDE)
    with torch.no_grad():
        small_in = F.interpolate(x, size=(TINY_SIZE, TINY_SIZE), mode="bilinear", antialias=True, align_corners=False)
        expected = (small.predict(small_in) + wide.predict(x)) / 2
        out = ensemble(x)
    torch.testing.assert_close(out.logits, expected)
    assert [f.shape[1] for f in out.stage_features] == ensemble.stage_dims
    assert out.fused_feature.shape[1] == config.fusion_dim
    # the file records each member's run, hash and reproducing command, and carries its own calibration
    assert [m["file"] for m in meta["members"]] == [str(tiny_runs / "teacher" / "best.pt"),
                                                    str(ensemble_run / "lite1" / "best.pt")]
    assert "--trunk efficientnet_lite1" in meta["members"][1]["command"]
    assert meta["calibration"]["temperature"] > 0
    report = json.loads((ensemble_run / "ensemble" / "report.json").read_text())
    assert report["split_fingerprint"] == meta["split_fingerprint"]
    recorded = json.loads((ensemble_run / "ensemble" / "config.json").read_text())
    assert recorded["stage"] == "ensemble"


def test_a_student_distils_from_the_ensemble(ensemble_run, tmp_path):
    report = train_tiny("mskd_lf", tmp_path / "student", teacher=ensemble_run / "ensemble" / "best.pt")
    assert 0 <= report["test"]["balanced_accuracy"] <= 1
    _, _, meta = load_checkpoint(tmp_path / "student" / "best.pt")
    assert meta["train_config"]["teacher"].endswith("best.pt")


def test_ensemble_grad_cam_averages_every_member_s_maps(ensemble_run):
    from core.explain.heatmaps import explain_gradcam
    from core.registry.loader import load_model

    classifier = load_model(ensemble_run / "ensemble" / "best.pt")
    image = Image.open(next((FIXTURE / "images").glob("*.jpg"))).convert("RGB")
    heatmap, settings, _ = explain_gradcam(classifier, image, target=0)
    assert heatmap.shape == (WIDE, WIDE) and torch.isfinite(torch.from_numpy(heatmap)).all()
    layers = settings["target_layers"]
    assert any(n.startswith("members.0.") for n in layers) and any(n.startswith("members.1.") for n in layers)


def test_members_from_different_splits_are_refused(tiny_runs, tmp_path, capsys):
    train_tiny("teacher", tmp_path / "other_split", seed=7)
    code = train_main(["--stage", "ensemble", "--members", f"{tiny_runs / 'teacher'},{tmp_path / 'other_split'}",
                       "--data-dir", str(FIXTURE), "--out", str(tmp_path / "ensemble")])
    assert code == 2
    assert "different splits" in capsys.readouterr().err


def test_ensemble_without_members_is_a_config_error(tmp_path, capsys):
    assert train_main(["--stage", "ensemble", "--out", str(tmp_path / "e")]) == 2
    assert "--members" in capsys.readouterr().err
