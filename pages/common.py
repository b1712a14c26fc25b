"""Shared view helpers for the pages: cached models, the disclaimer, uploads, the gallery, error guard."""

import csv
import hashlib
import json
import logging

import streamlit as st

from core.classes import FULL_NAMES
from core.data.preprocess import ImageError, load_image
from core.explain.chosen import chosen_settings
from core.explain.heatmaps import explain
from core.models.checkpoint import CheckpointError
from core.models.loader import load_model, with_batch_runtime
from core.paths import PROJECT_ROOT, weights_dir
from core.predict import predict_image
from core.serving import ModelWorkPool
from core.report import DATA_CREDIT, DISCLAIMER

log = logging.getLogger("dermadistill.app")
GALLERY = PROJECT_ROOT / "assets" / "gallery"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "gif", "tif", "tiff", "bmp", "webp"]  # decoded by content, not by name
MODEL_LABELS = {"student": "Student (distilled, default)", "quantized": "Quantized student (int8, fastest)",
                "teacher": "Teacher (large)"}


@st.cache_resource(show_spinner="Loading model ...")
def _cached_model(name: str, version: str):
    """One instance per process and model version (a promotion changes the version key). The student's
    explanation passes run in its ONNX Runtime twin when it can be built (else in torch)."""
    classifier = load_model(name)
    if name == "student":
        try:
            with_batch_runtime(classifier)
        except Exception:  # an export problem costs speed, never the answer
            log.exception("no ONNX Runtime twin for %s; explanations run in torch", name)
    return classifier


def get_model(name: str):
    """(classifier, None) or (None, clear error message). A promotion rewrites the manifest, which changes
    the cache key (its modification time and size), so the new version is loaded once."""
    work_pool()  # first: it sets the thread counts that the models' ONNX Runtime sessions then take
    manifest = weights_dir() / "manifest.json"
    stat = manifest.stat() if manifest.is_file() else None
    version = f"{stat.st_mtime_ns}-{stat.st_size}" if stat else "unversioned"
    try:
        return _cached_model(name, version), None
    except CheckpointError as exc:
        log.error("model %s unavailable: %s", name, exc)
        return None, f"The {name} model cannot be loaded: {exc}"


def float_counterpart(classifier):
    if classifier is None or classifier.module is not None:
        return None
    model, _ = get_model(classifier.float_counterpart)
    return model


@st.cache_resource
def work_pool() -> ModelWorkPool:
    """The process-wide pool for model work, shared by every session (see core.serving)."""
    return ModelWorkPool()


def request_explanation(classifier, key, image, method, target):
    """(job, future) of an explanation, computed once for all sessions per image, model, method, target and
    the settings chosen for the model (a new search result is not hidden by an older cached map)."""
    counterpart = float_counterpart(classifier)
    settings, _ = chosen_settings(method, classifier.sha256, getattr(counterpart, "sha256", None))
    job = ("explain", key, classifier.sha256, method, target, image.size, json.dumps(settings, sort_keys=True))
    future = work_pool().submit(job, explain, classifier, image, method, target=target, float_classifier=counterpart)
    return job, future


def await_result(job, future):
    """Wait for a pool job; if this script run is interrupted (rerun, browser gone) the job is released."""
    return work_pool().wait(job, future)


def explanation_for(classifier, key, image, method, target):
    """An explanation (class code `target`), waited for."""
    return await_result(*request_explanation(classifier, key, image, method, target))


def disclaimer():
    st.caption(f"**Disclaimer.** {DISCLAIMER}")


def data_credit():
    st.caption(DATA_CREDIT)


def _decode_and_predict(data: bytes, classifier, tta):
    image = load_image(data)  # ImageError for bad input: raised, never cached
    return image, predict_image(classifier, image, tta=tta)


def analysed(name: str, data: bytes, classifier, tta=None):
    """(image key, image, prediction) or (key, None, message). Decoding and prediction run once per image,
    model and inference mode in the shared pool, for all sessions and reruns."""
    key = image_key(data)
    job = ("predict", key, classifier.sha256, tta)
    try:
        image, prediction = await_result(job, work_pool().submit(job, _decode_and_predict, data, classifier, tta,
                                                                priority=0))
    except ImageError as exc:
        return key, None, f"{name}: {exc}"
    return key, image, prediction


def image_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gallery_items() -> list:
    """[(label, path)] of the sample gallery (held-out test-split images)."""
    items = []
    with open(GALLERY / "gallery.csv", newline="") as f:
        for row in csv.DictReader(f):
            label = f"{row['image_id']} — {FULL_NAMES[row['dx']]} (ground truth)"
            items.append((label, GALLERY / row["file"]))
    return items


_legacy_pages_mode_seen = False


def ensure_app_navigation():
    """Make a deep link work as the first request after a restart.

    Streamlit decides once per process whether the app uses the legacy `pages/` folder mode; until
    some session has run app.py (whose st.navigation switches that off), a bookmarked URL such as
    /compare runs the page script alone, with the folder's files as the menu and without the app's
    frame. Switch the mode off and rerun, so that app.py runs, builds the navigation and opens the
    requested page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    global _legacy_pages_mode_seen
    if PagesManager.uses_pages_directory and not _legacy_pages_mode_seen:
        _legacy_pages_mode_seen = True  # once per process: the flag is process-wide, and stays off once off
        PagesManager.uses_pages_directory = False
        st.rerun()


def guarded(render):
    """Run a page body; any unexpected error becomes a short message (details go to the server log)."""
    ensure_app_navigation()
    try:
        render()
    except Exception:  # streamlit's rerun/stop signals are BaseException and pass through
        log.exception("page error")
        st.error("Something went wrong while preparing this view. Your inputs are kept; please try again. "
                  "If it persists, tell the administrator (details are in the server log).")

