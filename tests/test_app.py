"""Every page in streamlit's AppTest, on tiny models in a private weights folder."""

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from core.classes import FULL_NAMES
from core.models.checkpoint import sha256_file
from tests.conftest import FIXTURE, ROOT

APP = str(ROOT / "app.py")
IMAGE = next((FIXTURE / "images").glob("*.jpg"))
PASSWORD = "correct horse battery staple"


def count(at, kind) -> int:
    def walk(node):
        n = int(getattr(node, "type", None) == kind)
        children = getattr(node, "children", None)
        return n + (sum(walk(c) for c in children.values()) if isinstance(children, dict) else 0)
    return walk(at._tree)


def texts(at) -> str:
    return "\n".join(e.value for kind in ("success", "warning", "error", "info", "markdown", "caption")
                     for e in getattr(at, kind))


@pytest.fixture()
def weights(private_weights):
    return private_weights


def app(page=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def test_diagnose_upload_shows_class_chart_and_three_overlays(weights):
    at = app()
    at.file_uploader[0].set_value([(IMAGE.name, IMAGE.read_bytes(), "image/jpeg")])
    at.run()
    assert not at.exception
    headline = " ".join(e.value for e in list(at.info) + list(at.warning) + list(at.error))
    assert any(name in headline for name in FULL_NAMES.values())
    assert not [e.value for e in at.error if not e.value.startswith("Refer:")]  # only a referral may be red
    assert count(at, "plotly_chart") == 1
    assert count(at, "image") >= 5  # the upload, then original + Grad-CAM + Score-CAM + LIME
    assert count(at, "download_button") == 1  # the PDF report
    assert "not a diagnostic device" in texts(at)


def test_diagnose_several_images_table_and_bad_file(weights):
    at = app()
    files = [(IMAGE.name, IMAGE.read_bytes(), "image/jpeg"),
             ("second.jpg", next(p for p in (FIXTURE / "images").glob("*.jpg") if p != IMAGE).read_bytes(), "image/jpeg"),
             ("broken.jpg", b"PK\x03\x04 this is a zip", "image/jpeg")]
    at.file_uploader[0].set_value(files)
    at.run()
    assert not at.exception
    assert any("broken.jpg" in e.value for e in at.error)
    assert count(at, "dataframe") >= 2  # results table + differential
    assert count(at, "download_button") == 2  # CSV + PDF


def test_sample_gallery(weights):
    at = app()
    at.selectbox[0].set_value(at.selectbox[0].options[1])
    at.run()
    assert not at.exception and count(at, "plotly_chart") == 1


def test_compare_page(weights):
    from pages.common import work_pool

    computed = work_pool().stats()["computed"]
    at = app("pages/compare.py")
    assert not at.error
    assert work_pool().stats()["computed"] == computed  # a fresh visit runs no model until asked
    assert count(at, "dataframe") >= 1
    assert count(at, "plotly_chart") >= 3
    assert "held-out" in texts(at)
    at.button[0].click()  # live latency
    at.run()
    assert not at.exception and "measured live" in texts(at)


def test_about_page(weights):
    at = app("pages/about.py")
    assert "Limitations" in texts(at) and "CC BY-NC 4.0" in texts(at)


def test_train_locked_without_password(weights):
    at = app("pages/train.py")
    assert "locked" in texts(at) and not at.form


def session_values(at) -> str:
    return json.dumps({k: str(at.session_state[k]) for k in ("admin_password", "login_message", "admin")
                       if k in at.session_state})


def login(at, password):
    at.text_input[0].set_value(password)
    at.button[0].click()
    at.run()


def test_train_refuses_wrong_password_and_throttles(weights, monkeypatch):
    monkeypatch.setenv("DERMADISTILL_ADMIN_PASSWORD", PASSWORD)
    at = app("pages/train.py")
    login(at, "wrong")
    assert any("Wrong password" in e.value for e in at.error)
    login(at, PASSWORD)  # immediately again: throttled, even with the right password
    assert any("Too many failed attempts" in e.value for e in at.error)
    assert PASSWORD not in session_values(at)


def wait_for_run(at, timeout=240):
    from core.training.jobs import active_job

    deadline = time.time() + timeout
    while active_job() and time.time() < deadline:
        time.sleep(1)
    at.run()


def test_train_start_progress_complete_promote_and_rollback(weights, monkeypatch):
    monkeypatch.setenv("DERMADISTILL_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("HAM10000_DIR", str(FIXTURE))
    at = app("pages/train.py")
    login(at, PASSWORD)
    assert at.session_state["admin"] is True
    assert PASSWORD not in session_values(at)
    inputs = {n.label: n for n in at.number_input}
    inputs["Epochs"].set_value(1)
    inputs["Batch size"].set_value(4)
    inputs["Image size"].set_value(64)
    inputs["Training seed"].set_value(3)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert any("Started" in s.value for s in at.success), texts(at)
    assert any("--train-seed 3" in c.value and "--seed 42" not in c.value for c in at.code)  # same split, seed 3
    # a second start while the first runs is refused, naming the running job
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    refused = [e.value for e in at.error if "already running" in e.value]
    from core.training.jobs import active_job
    if active_job():
        assert refused and "mskd_lf-" in refused[0]
    wait_for_run(at)
    assert "demo run" in texts(at) and "Test split" not in texts(at)  # the fixture is not the full data set
    assert count(at, "plotly_chart") >= 2
    before = sha256_file(weights / "student.pt")
    next(b for b in at.button if b.label == "Promote to active model").click()
    at.run()
    assert any("Not promoted" in e.value and "confirmation" in e.value for e in at.error)
    assert sha256_file(weights / "student.pt") == before
    at.text_input(key="promote-reason").set_value("demo of the promotion flow")
    at.checkbox(key="promote-confirm").check()
    next(b for b in at.button if b.label == "Promote to active model").click()
    at.run()
    assert not at.exception and not at.error
    after = sha256_file(weights / "student.pt")
    assert after != before
    manifest = json.loads((weights / "manifest.json").read_text())
    assert manifest["models"]["student"]["sha256"] == after
    next(b for b in at.button if b.label == "Roll back to previous version").click()
    at.run()
    assert sha256_file(weights / "student.pt") == before
