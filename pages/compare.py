"""Compare models: held-out metrics from the manifest, live latency, plots, ablation, one image through all three."""

import hashlib
import time

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.classes import CLASSES, FULL_NAMES
from core.data.external_sample import SAMPLE_PATH, sample_ids
from core.data.labelled_upload import UploadError
from core.distillation.stages import STAGES
from core.evaluation.calibration import referral_key
from core.evaluation.clinic import decode_upload, predictions_csv
from core.registry.bench import run_bench
from core.registry.loader import SHIPPED, read_manifest
from core.registry.predict import referral_target
from core.service.labelled_set import evaluate_labelled_set
from core.service.pdf_report import build_set_summary_pdf
from pages.common import (HELD_OUT, UPLOAD_TYPES, analysed, await_result, data_credit, disclaimer, explanation_for,
                          gallery_items, get_model, guarded, held_out_table, weights_version, work_pool)

STUDENT_STAGES = [name for name, stage in STAGES.items() if stage.role == "student"]
SUMMARY = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1", "auc": "Macro AUC"}


def metrics_table(models, latency):
    rows = []
    for name in SHIPPED:
        m = models.get(name)
        if not m:
            continue
        lat = latency.get(name, {})
        rows.append({"model": name, "parameters": m["params"], "file size (KB)": round(m["file_bytes"] / 1024, 1),
                     "input": f"{m['input_size']}×{m['input_size']}",
                     **{label: round(m["test"][k], 4) for k, label in SUMMARY.items()},
                     "latency p50 (ms)": round(lat["latency_ms_p50"], 2) if lat else None,
                     "latency p95 (ms)": round(lat["latency_ms_p95"], 2) if lat else None})
    return pd.DataFrame(rows)


def charts(models, latency):
    tabs = st.tabs(["Accuracy vs latency", "Confusion matrices", "Per-class recall", "ROC curves"])
    with tabs[0]:
        df = pd.DataFrame([{"model": n, "balanced accuracy": m["test"]["balanced_accuracy"],
                            "accuracy": m["test"]["accuracy"], "latency p50 (ms)": latency[n]["latency_ms_p50"],
                            "file size (KB)": m["file_bytes"] / 1024}
                           for n, m in models.items() if n in latency])
        if df.empty:
            st.info("Measure latency to draw this chart.")
        else:
            fig = px.scatter(df, x="latency p50 (ms)", y="balanced accuracy", size="file size (KB)", color="model",
                             hover_data=["accuracy"], size_max=60, log_x=True)
            st.plotly_chart(fig, width="stretch")
    reports = {name: m["test"] for name, m in models.items()}
    with tabs[1]:
        confusion_matrices(reports, "cm")
    with tabs[2]:
        recall_chart(reports, CLASSES)
    with tabs[3]:
        roc_chart(reports, CLASSES, "roc")


def confusion_matrices(reports: dict, key: str):
    """One confusion matrix per model report, counts or row-normalised (recall per true class)."""
    normalised = st.toggle("Row-normalised (recall per true class)", key=f"{key}-normalised")
    for col, (name, r) in zip(st.columns(len(reports)), reports.items()):
        cm = np.asarray(r["confusion_matrix"], dtype=float)
        if normalised:
            cm = np.divide(cm, cm.sum(axis=1, keepdims=True), out=np.zeros_like(cm), where=cm.sum(axis=1) > 0)
        fig = px.imshow(cm, x=CLASSES, y=CLASSES, text_auto=".2f" if normalised else True,
                        color_continuous_scale="Blues", labels=dict(x="predicted", y="true"), title=name)
        fig.update_layout(coloraxis_showscale=False, margin=dict(l=10, r=10, t=40, b=10))
        col.plotly_chart(fig, width="stretch")


def recall_chart(reports: dict, classes):
    df = pd.DataFrame([{"model": name, "class": c, "recall": r["per_class"][c]["recall"]}
                       for name, r in reports.items() for c in classes])
    st.plotly_chart(px.bar(df, x="class", y="recall", color="model", barmode="group"), width="stretch")


def roc_chart(reports: dict, classes, key: str):
    """One-vs-rest ROC of one class for every model, the area under each plotted curve in the legend."""
    classes = list(classes)
    c = st.selectbox("Class (one-vs-rest)", classes, index=classes.index("mel") if "mel" in classes else 0,
                     key=f"{key}-class", format_func=lambda k: f"{FULL_NAMES[k]} ({k})")
    fig = go.Figure()
    for name, r in reports.items():
        curve = r.get("roc", {}).get(c)
        if curve:
            fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines",
                                     name=f"{name} (AUC ≈ {np.trapezoid(curve['tpr'], curve['fpr']):.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"), name="chance"))
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=450)
    st.plotly_chart(fig, width="stretch")


def ablation(manifest):
    rows = manifest.get("ablation")
    if not rows:
        return
    st.markdown("### Ablation (same held-out test split; external set where measured)")
    df = pd.DataFrame([{"variant": r["name"], **{label: r[k] for k, label in SUMMARY.items()},
                        "external bal. acc.": (r.get("external") or {}).get("balanced_accuracy"),
                        **{f"ext. {k[:4]}.": ((r.get("external") or {}).get("referral_90") or {}).get(k)
                           for k in ("sensitivity", "specificity")},
                        "params (M)": r["params"] / 1e6, "size (MB)": r["file_bytes"] / 2**20,
                        # rows of models that are not benchmarked (the scratch teacher) have no latency
                        "p50 (ms)": r.get("latency_ms_p50")}
                       for r in rows])
    number = {c: st.column_config.NumberColumn(format="%.3f", width="small") for c in SUMMARY.values()}
    st.dataframe(df, hide_index=True, width="stretch", placeholder="—", column_config={
        "variant": st.column_config.TextColumn(width="large"), **number,
        "external bal. acc.": st.column_config.NumberColumn(
            format="%.3f", width="small", help="balanced accuracy on the external validation set (other clinics); "
                                               "blank where the row was not evaluated there"),
        **{f"ext. {k[:4]}.": st.column_config.NumberColumn(
            format="%.3f", width="small", help=f"referral {k} for malignant lesions on the external set, at the "
                                               "model's own threshold for 90% sensitivity in validation; blank where "
                                               "not measured") for k in ("sensitivity", "specificity")},
        "params (M)": st.column_config.NumberColumn(format="%.2f", width="small"),
        "size (MB)": st.column_config.NumberColumn(format="%.1f", width="small"),
        "p50 (ms)": st.column_config.NumberColumn(format="%.1f", width="small",
                                                  help="batch-1 latency from the release benchmark")})
    missing = [s for s in STUDENT_STAGES if s not in {r["stage"] for r in rows}]
    if missing:
        st.caption(f"Not re-run for this release: {', '.join(missing)} (no row).")
    unbenchmarked = [r["name"] for r in rows if r.get("latency_ms_p50") is None]
    st.caption(f"Latency from one benchmark run at release: `{manifest.get('bench', {}).get('command', '')}`"
               + (f"; not benchmarked (no latency): {', '.join(unbenchmarked)}." if unbenchmarked else ""))


def side_by_side():
    st.markdown("### One image through all three models")
    gallery = gallery_items()
    upload = st.file_uploader("Image", type=UPLOAD_TYPES, key="compare-upload")
    if upload:
        name, data = upload.name, upload.getvalue()
    else:
        choice = st.selectbox("…or a sample (HAM10000 test split)", [g[0] for g in gallery], key="compare-sample")
        name, data = choice, dict(gallery)[choice].read_bytes()
    data_credit()
    if not st.toggle("Run it through all three models (predictions, then Grad-CAM and Score-CAM; the teacher's "
                     "maps take several seconds)", key="compare-run"):
        return
    cols = st.columns(3)
    labels = {}
    for col, model_name in zip(cols, SHIPPED):
        with col:
            st.markdown(f"**{model_name}**")
            classifier, error = get_model(model_name)
            if error:
                st.error(error)
                continue
            key, image, p = analysed(name, data, classifier)
            if image is None:  # the same refusal for every model: say it once
                st.error(f"Could not use {p}")
                return
            if not p.dermoscopic:
                st.error("Not a dermoscopic image of a skin lesion: no answer, no maps.")
                continue
            labels[model_name] = p.label
            st.write(f"{p.full_name} — {p.confidence:.0%}" + (" · uncertain" if p.uncertain else ""))
            if p.referral is not None:
                st.caption(("**Refer**: " if p.referral else "Below the referral threshold: ")
                           + f"malignancy risk {p.malignancy_risk:.0%} (threshold {p.referral_threshold:.0%})")
            for method in ("gradcam", "scorecam"):
                with st.spinner(f"{method} on {model_name} ..."):
                    e = explanation_for(classifier, key, image, method, p.label)
                st.image(e.overlay, caption=f"{'Grad-CAM' if method == 'gradcam' else 'Score-CAM'} · {e.seconds:.1f} s",
                         width="stretch")
    if labels:
        if len(set(labels.values())) == 1:
            st.success(f"All models agree: {FULL_NAMES[next(iter(labels.values()))]}.")
        else:
            st.warning("The models disagree: " + ", ".join(f"{m}: {c}" for m, c in labels.items()))


def upload_digest(upload: dict) -> str:
    h = hashlib.sha256(upload.get("zip_bytes") or upload.get("csv_bytes"))
    for name, data in upload.get("images", []):
        h.update(name.encode())
        h.update(data)
    return h.hexdigest()


def your_images(models):
    """A researcher's or clinic's own labelled set, evaluated by every shipped model beside the held-out sets."""
    st.markdown("### Your images")
    st.caption("Upload a labelled set: a zip of images with one CSV (`image_id,dx`, optional `lesion_id`), or a CSV "
               "and the image files. It is checked before any work; nothing of it is kept on the server after the "
               "evaluation (images are unpacked into a private temporary folder and deleted once decoded).")
    sample = f"try it: the shipped sample ({len(sample_ids())} external images)"
    shape = st.radio("Upload as", ["zip", "CSV + image files", sample], horizontal=True, key="yours-shape")
    if shape == sample:
        upload = {"zip_bytes": SAMPLE_PATH.read_bytes()}
        st.caption("Three images per class from the ISIC 2018 Task 3 test set (CC BY-NC 4.0; Codella et al. 2019, "
                   "Tschandl et al. 2018), left out of every external figure here. Too few to judge a model: it "
                   "shows what the evaluation gives, and the zip shows the upload format.")
        st.download_button("Download the sample zip", upload["zip_bytes"], file_name=SAMPLE_PATH.name,
                           mime="application/zip", key="yours-sample-download")
    elif shape == "zip":
        archive = st.file_uploader("Zip of images and a CSV", type=["zip"], key="yours-zip")
        upload = {"zip_bytes": archive.getvalue()} if archive else None
    else:
        labels = st.file_uploader("CSV (image_id, dx[, lesion_id])", type=["csv"], key="yours-csv")
        files = st.file_uploader("Images", type=UPLOAD_TYPES, accept_multiple_files=True, key="yours-images")
        upload = ({"csv_bytes": labels.getvalue(), "images": [(f.name, f.getvalue()) for f in files]}
                  if labels and files else None)
    if not upload or not st.button("Check and evaluate", key="yours-go"):
        results = st.session_state.get("yours-results")
        if results:
            show_your_results(*results, models)
        return
    classifiers = {}
    for name in SHIPPED:
        classifier, error = get_model(name)
        if error:
            st.error(error)
            return
        classifiers[name] = classifier
    sizes = {c.config.img_size for c in classifiers.values()} | {c.gate.config.img_size for c in classifiers.values()
                                                                  if c.gate is not None}
    bar = st.progress(0.0, text="Checking and decoding the images ...")
    job = ("decode-upload", upload_digest(upload), tuple(sorted(sizes)))
    try:
        decoded = await_result(job, work_pool().submit(job, decode_upload, sizes, keep=False, **upload))
    except UploadError as exc:
        bar.empty()
        st.error("This upload cannot be evaluated:\n" + "\n".join(f"- {p}" for p in exc.problems))
        return
    n = len(decoded.image_ids)
    bar.progress(0.1, text=f"Evaluating on {n} images ...")
    reports = evaluate_labelled_set(work_pool(), classifiers, decoded, job[1], await_result,
                                    progress=lambda done, total, name: bar.progress(
                                        0.1 + 0.9 * done / total, text=f"Evaluating on {n} images: {name} ..."))
    bar.progress(1.0, text="Done")
    decoded.images = {}  # the session keeps the figures, not the pixels
    st.session_state["yours-results"] = (decoded, reports)
    show_your_results(decoded, reports, models)


def show_your_results(decoded, reports, models):
    target = referral_target()
    n = len(decoded.image_ids)
    st.success(f"{n} images evaluated: " + ", ".join(f"{c} {k}" for c, k in decoded.class_counts.items()))
    for warning in decoded.warnings:
        st.warning(warning)
    combined = {name: {**models.get(name, {}), "yours": report} for name, report in reports.items()}
    st.dataframe(held_out_table(combined, target, sets={"yours": "your images", **HELD_OUT}),
                 hide_index=True, width="stretch")
    st.caption("95% bootstrap intervals (your images: lesions resampled where the CSV has lesion_id, else images). "
               "The same figures come from `python -m core.evaluate --model NAME --images DIR --labels CSV`.")
    tabs = st.tabs(["Per-class recall", "Confusion matrices", "ROC curves", "Reliability"])
    with tabs[0]:
        recall_chart(reports, list(decoded.class_counts))
    with tabs[1]:
        confusion_matrices(reports, "yours-cm")
    with tabs[2]:
        roc_chart(reports, list(decoded.class_counts), "yours-roc")
    with tabs[3]:
        fig = go.Figure()
        for name, r in reports.items():
            bins = r["reliability"]
            fig.add_trace(go.Scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins],
                                     mode="lines+markers", name=f"{name} (ECE {r['ece']:.3f})"))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"),
                                 name="perfect calibration"))
        fig.update_layout(xaxis_title="calibrated confidence (top class)", yaxis_title="accuracy", height=420)
        st.plotly_chart(fig, width="stretch")
    left, right = st.columns(2)
    left.download_button("Download per-image predictions (CSV)", predictions_csv(decoded, reports, target),
                         file_name="dermadistill-your-images.csv", mime="text/csv", key="yours-csv-download")
    right.download_button("Download a one-page summary (PDF)",  # built on the click
                          lambda: build_set_summary_pdf(decoded, combined, referral_key(target),
                                                        {"yours": "your images", **HELD_OUT}),
                          file_name=f"dermadistill-your-images-{time.strftime('%Y-%m-%d')}.pdf",
                          mime="application/pdf", key="yours-pdf-download")


def render():
    st.title("Compare models")
    disclaimer()
    manifest = read_manifest()
    models = {n: m for n, m in manifest.get("models", {}).items() if n in SHIPPED}
    if not models:
        st.info("No shipped models found in weights/manifest.json.")
        return
    split = manifest.get("test_split", {})
    st.caption(f"Accuracy metrics: held-out **{split.get('name', 'test')}** split of HAM10000, n = {split.get('n', '?')} "
               f"images, grouped by {split.get('grouping', 'lesion')}, split fingerprint "
               f"`{str(split.get('fingerprint', ''))[:12]}` (from weights/manifest.json).")
    if st.button("Measure latency on this machine now"):
        with st.spinner("Benchmarking (batch 1, 2 threads; queued behind other users' model work) ..."):
            job = ("bench", tuple(models), weights_version(), time.time())  # each press measures afresh
            st.session_state["bench"] = await_result(job, work_pool().submit(job, run_bench, models=tuple(models),
                                                                             threads=2, runs=60, priority=2))
    live = st.session_state.get("bench")
    latency = (live or manifest.get("bench", {})).get("models", {})
    st.dataframe(metrics_table(models, latency), hide_index=True, width="stretch")
    st.caption("Latency: " + ("measured live just now on " + live["cpu"] if live else
                              "from the release benchmark (`python -m core.bench`); press the button to measure here"))
    target = referral_target()
    st.markdown(f"### Held-out results and the referral flag ({target:.0%} validation-sensitivity point)")
    st.dataframe(held_out_table(models, target), hide_index=True, width="stretch")
    st.caption("95% bootstrap intervals (HAM10000 test: lesions resampled; external: images). Referral: malignancy "
               "risk = calibrated P(mel) + P(bcc) + P(akiec) at or above each model's threshold chosen on HAM10000 "
               "validation. From `python -m core.release --recalibrate`, stored in weights/manifest.json.")
    charts(models, latency)
    ablation(manifest)
    your_images(models)
    side_by_side()


guarded(render)
