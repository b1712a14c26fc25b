"""Shared fixtures: the tiny HAM10000-layout data set, and tiny trained models in a private weights folder.

Everything runs offline on the fixture; tests that want the real data use `ham10000_dir` and skip
when ../shared/data/ham10000 is absent.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "ham10000_tiny"


def _full_copy(folder: Path) -> bool:
    """Does `folder` hold the whole of HAM10000 (all 10,015 metadata rows), not a subset like the fixture?"""
    metadata = folder / "HAM10000_metadata.csv"
    return metadata.is_file() and sum(1 for _ in metadata.open(encoding="utf-8", errors="replace")) > 10_015


# the full data set: $HAM10000_DIR when it is a full copy, else the copy beside the checkout
SHARED = next((d for d in (Path(os.environ.get("HAM10000_DIR") or "/nonexistent"),) if _full_copy(d)),
              ROOT.parent / "shared" / "data" / "ham10000")
TINY_SIZE = 64
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"
SHIPPED = ROOT / "weights" / "manifest.json"

os.environ.setdefault("TQDM_DISABLE", "1")


def has_chromium() -> bool:
    return shutil.which(CHROMIUM) is not None


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Image caches of the tests go to a temporary folder, never into the checkout."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["DERMADISTILL_CACHE"] = str(path)
    yield path


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The app's model-work pool sets torch to one thread per worker for its process; in the test process
    that must not slow every later test."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def ham10000_dir() -> Path:
    if not (SHARED / "HAM10000_metadata.csv").is_file():
        pytest.skip("full HAM10000 copy not present ($HAM10000_DIR or ../shared/data/ham10000)")
    return SHARED


def train_tiny(stage, out, teacher=None, epochs=1, callback=lambda event, **data: None, **overrides):
    from core.training.config import TrainConfig
    from core.training.trainer import run_training

    settings = {"img_size": TINY_SIZE, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0, **overrides}
    cfg = TrainConfig(stage=stage, out=str(out), data_dir=str(FIXTURE), teacher=str(teacher) if teacher else None,
                      epochs=epochs, **settings)
    return run_training(cfg, callback=callback)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A 1-epoch teacher run and a 1-epoch mskd_lf run distilled from it, on the fixture."""
    root = tmp_path_factory.mktemp("runs")
    train_tiny("teacher", root / "teacher")
    train_tiny("mskd_lf", root / "mskd_lf", teacher=root / "teacher" / "best.pt")
    return root


ENSEMBLE_WIDE = TINY_SIZE + 16  # the ensemble's second member sees a larger input, as the Lite1 member does


@pytest.fixture(scope="session")
def ensemble_run(tiny_runs, tmp_path_factory):
    """The tiny Lite0 teacher plus a tiny Lite1 teacher at a larger size, assembled by the CLI."""
    from core.training.__main__ import main as train_main

    root = tmp_path_factory.mktemp("ensemble")
    train_tiny("teacher", root / "lite1", img_size=ENSEMBLE_WIDE, trunk="efficientnet_lite1")
    members = f"{tiny_runs / 'teacher'},{root / 'lite1' / 'best.pt'}"  # a run folder and a checkpoint file
    assert train_main(["--stage", "ensemble", "--members", members, "--data-dir", str(FIXTURE),
                       "--out", str(root / "ensemble")]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_weights(tiny_runs, tmp_path_factory):
    """A weights folder with teacher, student and int8 quantized models built from the tiny runs.

    Promoted twice, so that weights/previous/ holds a good version for the fallback tests."""
    from core.registry.promotion import promote

    root = tmp_path_factory.mktemp("weights")
    shutil.copyfile(tiny_runs / "teacher" / "best.pt", root / "teacher.pt")
    promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=root, confirmed=True)
    promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=root, confirmed=True)
    return root


@pytest.fixture()
def private_weights(tiny_weights, tmp_path, monkeypatch):
    """A private, writable copy of the tiny weights (promotion and damage tests change it), a private runs
    folder, no admin password, and fresh Streamlit resource caches."""
    import streamlit as st

    root = tmp_path / "weights"
    shutil.copytree(tiny_weights, root)
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(root))
    monkeypatch.setenv("DERMADISTILL_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("DERMADISTILL_ADMIN_PASSWORD", raising=False)
    st.cache_resource.clear()
    return root


@pytest.fixture()
def use_weights(tiny_weights, monkeypatch):
    """Point the loader (and subprocesses) at the tiny weights folder."""
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(tiny_weights))
    return tiny_weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ADMIN_PASSWORD = "browser-test-admin"


@contextmanager
def streamlit_server(script="app.py", env=None):
    """`streamlit run script` on a free loopback port, with `env` added to this environment; yields its URL once
    it answers the health check, and fails the test if its log has a traceback when it stops."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        try:
            log = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture()
def server(request):
    """`streamlit run app.py` on the shipped models (tiny ones if none are shipped), the admin password set."""
    weights = ROOT / "weights" if SHIPPED.is_file() else request.getfixturevalue("tiny_weights")
    env = {"DERMADISTILL_WEIGHTS": str(weights), "DERMADISTILL_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with streamlit_server(env=env) as url:
        yield url
