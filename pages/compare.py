"""Compare models: held-out metrics from the manifest, live latency, plots, ablation, one image through all three."""

import time

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.bench import run_bench
from core.classes import CLASSES, FULL_NAMES
from core.models.loader import SHIPPED, read_manifest
from core.predict import referral_target
from pages.common import (UPLOAD_TYPES, analysed, await_result, data_credit, disclaimer, explanation_for,
                          gallery_items, get_model, guarded, held_out_table, weights_version, work_pool)

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
    with tabs[1]:
        cols = st.columns(len(models))
        for col, (name, m) in zip(cols, models.items()):
            cm = m["test"]["confusion_matrix"]
            fig = px.imshow(cm, x=CLASSES, y=CLASSES, text_auto=True, color_continuous_scale="Blues",
                            labels=dict(x="predicted", y="true"), title=name)
            fig.update_layout(coloraxis_showscale=False, margin=dict(l=10, r=10, t=40, b=10))
            col.plotly_chart(fig, width="stretch")
    with tabs[2]:
        df = pd.DataFrame([{"model": n, "class": c, "recall": m["test"]["per_class"][c]["recall"]}
                           for n, m in models.items() for c in CLASSES])
        st.plotly_chart(px.bar(df, x="class", y="recall", color="model", barmode="group"), width="stretch")
    with tabs[3]:
        name = st.selectbox("Model", list(models), key="roc-model")
        fig = go.Figure()
        for c, curve in models[name]["test"].get("roc", {}).items():
            fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=f"{c} ({FULL_NAMES[c]})"))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"), name="chance"))
        fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=450)
        st.plotly_chart(fig, width="stretch")


def ablation(manifest):
    rows = manifest.get("ablation")
    if not rows:
        return
    st.markdown("### Ablation (same held-out test split)")
    df = pd.DataFrame([{"variant": r["name"], **{label: round(r[k], 4) for k, label in SUMMARY.items()},
                        "parameters": r["params"], "file size (KB)": round(r["file_bytes"] / 1024, 1),
                        # rows of models that are not benchmarked (the scratch teacher) have no latency
                        "latency p50 (ms)": round(r["latency_ms_p50"], 2) if "latency_ms_p50" in r else None}
                       for r in rows])
    st.dataframe(df, hide_index=True, width="stretch")
    st.caption(f"Latency from one benchmark run at release: `{manifest.get('bench', {}).get('command', '')}`")


def side_by_side():
    st.markdown("### One image through all three models")
    gallery = gallery_items()
    upload = st.file_uploader("Image", type=UPLOAD_TYPES, key="compare-upload")
    choice = st.selectbox("…or a sample", [g[0] for g in gallery], key="compare-sample")
    name, data = (upload.name, upload.getvalue()) if upload else (choice, dict(gallery)[choice].read_bytes())
    data_credit()
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
    side_by_side()


guarded(render)
