"""Shared view helpers for the pages: cached models, the disclaimer, uploads, the gallery, error guard."""

import csv
import hashlib
import json
import logging
from pathlib import Path

import streamlit as st

from core.classes import FULL_NAMES
from core.data.preprocess import ImageError, load_image, working_copy
from core.evaluation.calibration import referral_key
from core.evaluation.report import summary_rows
from core.explain.chosen import chosen_settings
from core.explain.heatmaps import explain
from core.models.checkpoint import CheckpointError
from core.paths import PROJECT_ROOT, weights_dir
from core.registry.loader import SHIPPED, load_model, with_batch_runtime
from core.registry.predict import predict_image, referral_target
from core.service.pdf_report import DATA_CREDIT, DISCLAIMER
from core.service.pool import ModelRegistry, ModelWorkPool

log = logging.getLogger("dermadistill.app")
GALLERY = PROJECT_ROOT / "assets" / "gallery"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "gif", "tif", "tiff", "bmp", "webp"]  # decoded by content, not by name
MODEL_LABELS = {"student": "Student (distilled, default)", "quantized": "Quantized student (int8, fastest)",
                "teacher": "Teacher (large)"}


def _prepare(classifier):
    """The student's explanation passes run in its ONNX Runtime twin once it is exported (in the background;
    until then they run in torch)."""
    if classifier.name == "student":
        with_batch_runtime(classifier)


@st.cache_resource
def model_registry() -> ModelRegistry:
    """The process-wide loaded models, one version per name (core.service.pool.ModelRegistry)."""
    return ModelRegistry(load_model, _prepare)


def weights_version() -> str:
    """Changes whenever weights/ is rewritten (a promotion or rollback rewrites the manifest)."""
    manifest = weights_dir() / "manifest.json"
    stat = manifest.stat() if manifest.is_file() else None
    return f"{stat.st_mtime_ns}-{stat.st_size}" if stat else "unversioned"


@st.cache_resource
def warm_up():
    """Once per server process, at the first page view: the work pool, then every shipped model loaded in the
    background, so that the first answer does not wait for them."""
    work_pool()
    referral_target()  # a bad DERMADISTILL_REFERRAL_SENSITIVITY is reported once, clearly (app.py)
    return model_registry().warm(SHIPPED, weights_version)


def get_model(name: str):
    """(classifier, None) or (None, clear error message); the current version of weights/ is loaded once."""
    work_pool()  # first: it sets the thread counts that the models' ONNX Runtime sessions then take
    try:
        return model_registry().get(name, weights_version()), None
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
    """The process-wide pool for model work, shared by every session (see core.service.pool)."""
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
    """Wait for a pool job. While waiting, an invisible placeholder is touched every quarter second: that `st.*` call
    is where Streamlit raises when this run is asked to rerun or its browser has gone, and the job is then released
    (cancelled if no other session waits for it)."""
    if future.done():
        return work_pool().wait(job, future)
    return work_pool().wait(job, future, heartbeat=st.empty().empty)


def explanation_for(classifier, key, image, method, target):
    """An explanation (class code `target`), waited for."""
    return await_result(*request_explanation(classifier, key, image, method, target))


def referral_line(prediction):
    """The referral advice: red when the malignancy risk is above the validated threshold, else the plain-words
    meaning of being below it (never a reassurance). Shown whatever the top class, also when uncertain."""
    text = prediction.referral_text()
    if text:
        (st.error if prediction.referral else st.info)(text, icon=":material/emergency:" if prediction.referral
                                                        else ":material/info:")


def model_banner(classifier):
    """Which model answers (file sha, date, source), a notice when it changed since this session first saw it,
    and a warning for demo-subset models."""
    ident = classifier.identity
    date = ident["date"][:10] if ident["date"] else "date unknown"
    st.caption(f"Answering model: **{MODEL_LABELS.get(ident['name'], ident['name'])}** · file `{ident['sha256']}` · "
               f"{date} · {ident['source']}")
    if ident.get("site_calibration"):
        st.caption(f"Confidence and referral threshold from this clinic's {ident['site_calibration']}.")
    seen = st.session_state.setdefault("models_seen", {})
    first = seen.setdefault(ident["name"], ident["sha256"])
    if first != ident["sha256"]:
        st.info(f"The active {ident['name']} model changed since you opened this page (was `{first}`, now "
                f"`{ident['sha256']}`): answers from before and after the change may differ.")
    if ident["demo"]:
        st.warning("This model was trained on a small demo subset, not on the full data set: its answers are "
                   "for trying the software only.")


HELD_OUT = {"test": "HAM10000 test split", "external": "ISIC 2018 external validation"}


def held_out_table(models: dict, target: float, sets: dict = None):
    """Per model and labelled set (default the held-out sets): `core.evaluation.report.summary_rows` as a table."""
    import pandas as pd

    return pd.DataFrame(summary_rows(models, referral_key(target), sets or HELD_OUT))


def disclaimer():
    st.caption(f"**Disclaimer.** {DISCLAIMER}")


def data_credit():
    st.caption(DATA_CREDIT)


def _decode_and_predict(data: bytes, classifier, tta):
    image = working_copy(load_image(data))  # ImageError for bad input: raised, never cached
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


FRAME_RERUN_KEY = "_reran_through_app_py"


def ran_without_the_app_frame() -> bool:
    """True when Streamlit's legacy `pages/` folder mode ran this page script on its own in this run.

    In that mode (see ensure_app_navigation) the navigation Streamlit builds has app.py itself as its main page;
    app.py's own st.navigation lists only the pages/ scripts. Checked per run, not per process: two visitors whose
    runs started before either of them switched the mode off both ran without the frame.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    pages, app = get_script_run_ctx().pages_manager, (PROJECT_ROOT / "app.py").resolve()
    if Path(pages.main_script_path).resolve() != app:  # a page run as the main script itself (AppTest, tests)
        return False
    return any(Path(info["script_path"]).resolve() == app for info in pages.get_pages().values())


def ensure_app_navigation():
    """Make a deep link work as the first request(s) after a restart.

    Streamlit decides once per process whether the app uses the legacy `pages/` folder mode; until
    some session has run app.py (whose st.navigation switches that off), a bookmarked URL such as
    /compare runs the page script alone, with the folder's files as the menu and without the app's
    frame. Switch the mode off and rerun, so that app.py runs, builds the navigation and opens the
    requested page. Once per session: on a server only a session's first run can be in that mode (once off, it
    stays off), while Streamlit's AppTest switches it on before every run, where a rerun each time would drop
    that run's button clicks.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if ran_without_the_app_frame() and not st.session_state.get(FRAME_RERUN_KEY):
        st.session_state[FRAME_RERUN_KEY] = True
        PagesManager.uses_pages_directory = False  # process-wide; read at the start of every later run
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

