"""Training jobs never corrupt the active models; bad parameters and damaged weights get clear errors."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from core.data.ham10000 import DatasetError
from core.models.checkpoint import CheckpointError, read_checkpoint, sha256_file
from core.registry.loader import load_model
from core.training.config import TrainConfig
from core.training.jobs import JobError, active_job, cancel_job, check_data, start_job, writer_alive
from tests.conftest import FIXTURE, ROOT, TINY_SIZE


@pytest.fixture()
def weights(private_weights):
    return private_weights


def digests(root):
    return {p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")}


def tiny_config(stage="student", epochs=3, **kw):
    return TrainConfig(stage=stage, out="", data_dir=str(FIXTURE), epochs=epochs, img_size=TINY_SIZE, batch_size=4, **kw)


def wait_until_done(timeout=120):
    deadline = time.time() + timeout
    while active_job() and time.time() < deadline:
        time.sleep(0.3)


def read_progress(job):
    with open(os.path.join(job["run"], "progress.json")) as f:
        return json.load(f)


def test_second_start_is_refused_and_cancel_stops_cleanly(weights):
    job = start_job(tiny_config(epochs=50))
    try:
        with pytest.raises(JobError, match=os.path.basename(job["run"])):
            start_job(tiny_config())
        deadline = time.time() + 120
        while read_progress(job).get("state") != "training" and time.time() < deadline:
            time.sleep(0.2)
    finally:
        assert cancel_job()
        wait_until_done()
    assert read_progress(job)["state"] == "cancelled"
    assert active_job() is None
    start_job(tiny_config(epochs=1))  # the slot is free again
    wait_until_done()


def test_sigkill_at_random_moments_leaves_active_weights_identical(weights):
    before = digests(weights)
    rng = random.Random(0)
    for delay in [rng.uniform(0.2, 6.0) for _ in range(4)]:
        job = start_job(tiny_config(epochs=20))
        time.sleep(delay)
        os.killpg(job["pid"], signal.SIGKILL)
        wait_until_done()
        assert digests(weights) == before
        for name in ("teacher", "student", "quantized"):
            assert not load_model(name).warnings
        last = os.path.join(job["run"], "last.pt")
        if os.path.exists(last):
            read_checkpoint(last)  # atomic writes: never half a file


def test_sigkill_during_promotion_keeps_models_loadable(weights, tiny_runs):
    old = {n: sha256_file(weights / f) for n, f in (("student", "student.pt"), ("quantized", "quantized.onnx"))}
    code = ("import sys; from core.registry.promotion import promote; "
            f"promote({str(tiny_runs / 'mskd_lf')!r}, data_dir={str(FIXTURE)!r}, root={str(weights)!r}, confirmed=True)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.5, 1.5, 3.0, 5.0):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        for name in ("student", "quantized"):
            model = load_model(name)  # active or, mid-swap, the previous good version
            assert model.sha256
        assert not list(weights.glob("*.tmp*"))
    assert old  # promotion from the same run repeatedly: old versions remain in previous/


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "nope", "data folder not found"),
    (lambda d: d, "has no HAM10000_metadata.csv"),
])
def test_bad_data_folders_are_refused_before_work(tmp_path, make, message):
    with pytest.raises(DatasetError, match=message):
        check_data(TrainConfig(stage="student", out="", data_dir=str(make(tmp_path))))


def test_missing_images_and_unknown_labels_are_listed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx\nL1,ISIC_0000001,mel\nL2,ISIC_0000002,freckle\nL3,ISIC_0000003,nv\n")
    with pytest.raises(DatasetError) as info:
        check_data(TrainConfig(stage="student", out="", data_dir=str(tmp_path)))
    text = str(info.value)
    assert "freckle" in text and "ISIC_0000001" in text and "ISIC_0000003" in text and "3 image(s)" in text


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_fall_back_to_previous(weights, damage):
    path = weights / "student.pt"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    expected = json.loads((weights / "manifest.json").read_text())["models"]["student"]["sha256"]
    path.write_bytes(bytes(data))
    model = load_model("student")
    assert model.warnings and "student.pt" in model.warnings[0] and expected in model.warnings[0]
    assert model.path.parent.name == "previous"
    shutil.rmtree(weights / "previous", ignore_errors=True)
    with pytest.raises(CheckpointError) as info:
        load_model("student")
    assert "student.pt" in str(info.value) and expected in str(info.value)


def test_a_run_started_from_the_command_line_is_seen_running_only_while_its_writer_lives():
    """The Train page has no job record for a CLI run: it asks whether the pid in progress.json is still the
    process that started the run."""
    import psutil

    me = psutil.Process()
    assert writer_alive({"pid": me.pid, "started": time.time()})
    assert not writer_alive({"pid": me.pid, "started": me.create_time() - 60})  # pid reused by a newer process
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not writer_alive({"pid": int(ended.stdout), "started": time.time()})
    assert not writer_alive({})  # an older progress file without pid
