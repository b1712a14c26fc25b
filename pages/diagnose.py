"""Diagnose: upload or pick images, see the calibrated prediction, explanations and a PDF report."""

import datetime as dt
import io

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.classes import CLASSES, FULL_NAMES
from core.explain.heatmaps import METHOD_LABELS, describe_settings, overlay_heatmap
from core.models.loader import read_manifest
from core.report import build_pdf_report
from pages.common import (MODEL_LABELS, UPLOAD_TYPES, analysed, await_result, data_credit, disclaimer,
                          gallery_items, get_model, guarded, request_explanation)

METHODS = ("gradcam", "scorecam", "lime")
MAX_WORKING_SIDE = 1024  # very large photos are explained on a downscaled copy


def working_copy(image: Image.Image) -> Image.Image:
    if max(image.size) <= MAX_WORKING_SIDE:
        return image
    copy = image.copy()
    copy.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)
    return copy


def probability_chart(prediction):
    classes = list(prediction.probabilities)
    values = [prediction.probabilities[c] for c in classes]
    colors = ["#b91c1c" if c in ("mel", "bcc", "akiec") else "#0e7490" for c in classes]
    fig = go.Figure(go.Bar(x=values, y=[f"{FULL_NAMES[c]} ({c})" for c in classes], orientation="h",
                           marker_color=colors, text=[f"{v:.1%}" for v in values], textposition="auto"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(range=[0, 1], tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), title="Calibrated probabilities (red: suspicious classes)")
    return fig


def headline(prediction):
    if prediction.uncertain:
        st.warning(f"**Uncertain** — no confident answer. Most likely: {prediction.full_name} "
                   f"({prediction.confidence:.0%}).\n\n" + "\n".join(f"- {r}" for r in prediction.reasons))
    elif prediction.suspicious:
        st.error(f"**{prediction.full_name}** ({prediction.label}) — {prediction.confidence:.0%} calibrated "
                 "confidence.\n\n**Suspicious — consider referral/biopsy.**")
    else:
        st.success(f"**{prediction.full_name}** ({prediction.label}) — {prediction.confidence:.0%} calibrated confidence.")
    for w in prediction.warnings:
        st.info(w)


def detail(name, key, image, prediction, classifier, model_name):
    st.subheader(name)
    left, right = st.columns([1, 2])
    with left:
        st.image(image, caption=f"{image.width}×{image.height}", width="stretch")
    with right:
        headline(prediction)
        st.plotly_chart(probability_chart(prediction), width="stretch")
    top3 = pd.DataFrame([{"Rank": i + 1, "Class": FULL_NAMES[c], "Code": c, "Probability": f"{p:.1%}"}
                         for i, (c, p) in enumerate(prediction.top(3))])
    st.markdown("**Differential (top 3)**")
    st.dataframe(top3, hide_index=True, width="stretch")

    st.markdown("### Explanations")
    c1, c2 = st.columns(2)
    target = c1.selectbox("Explain class", CLASSES, index=CLASSES.index(prediction.label),
                          format_func=lambda c: f"{FULL_NAMES[c]} ({c})", key=f"target-{key}")
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key=f"opacity-{key}")
    work = working_copy(image)
    cols = st.columns(4)
    cols[0].image(work, caption="Original", width="stretch")
    # All three are queued at once in the shared pool; each fills its own column when ready.
    requests = {m: request_explanation(classifier, key, work, m, target) for m in METHODS}
    overlays, settings = {}, {}
    for col, method in zip(cols[1:], METHODS):
        with col:
            with st.spinner(f"{METHOD_LABELS[method]} ..."):
                e = await_result(*requests[method])
            overlay = overlay_heatmap(work, e.heatmap, opacity, e.outline)
            overlays[METHOD_LABELS[method]] = overlay
            settings[METHOD_LABELS[method]] = describe_settings(method, e.settings)
            st.image(overlay, caption=f"{METHOD_LABELS[method]} · {e.seconds:.1f} s", width="stretch")
            st.caption(settings[METHOD_LABELS[method]])
            for note in e.notes:
                st.caption(note)
    st.caption("Warm colours: regions that raised the score of the explained class. LIME outlines its top "
               "superpixels in white. Explanations show what the model used, not where the pathology is.")
    manifest = read_manifest().get("models", {}).get(model_name, {})

    def pdf():  # built when the button is clicked, not on every rerun of every session
        return build_pdf_report(work, name, prediction, overlays, model_name, classifier.sha256,
                                manifest.get("date", ""), now=dt.datetime.now(dt.timezone.utc), settings=settings)

    st.download_button("Download PDF report", pdf, file_name=f"dermadistill-report-{key[:16]}.pdf",
                       mime="application/pdf", key=f"pdf-{key}")


def results_table(rows):
    df = pd.DataFrame([{"file": n, "class": p.label, "name": p.full_name, "probability": round(p.confidence, 4),
                        "suspicious": p.suspicious, "uncertain": p.uncertain} for n, _, _, p in rows])
    st.dataframe(df, hide_index=True, width="stretch")
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    st.download_button("Download results (CSV)", buf.getvalue(), file_name="dermadistill-results.csv", mime="text/csv")


def render():
    st.title("Diagnose")
    disclaimer()
    model_name = st.radio("Model", ["student", "quantized", "teacher"], format_func=MODEL_LABELS.get, horizontal=True)
    classifier, error = get_model(model_name)
    if error:
        st.error(error)
        return
    for warning in classifier.warnings:
        st.warning(warning)
    default_tta = bool(classifier.calibration.get("tta", False))
    tta = st.toggle("Test-time augmentation (average of 8 flips and rotations)", value=default_tta,
                    key=f"tta-{model_name}",
                    help=f"{'On' if default_tta else 'Off'} by default for this model, as chosen on the validation "
                         "split. Explanations always show the single, unaugmented image.")
    uploads = st.file_uploader("Upload dermoscopic images (JPEG or PNG)", type=UPLOAD_TYPES,
                               accept_multiple_files=True)
    gallery = gallery_items()
    choice = st.selectbox("…or pick a sample image (HAM10000 test split)", ["(none)"] + [g[0] for g in gallery])
    data_credit()
    inputs = [(f.name, f.getvalue()) for f in uploads or []]
    if choice != "(none)":
        inputs.append((choice.split(" — ")[0], dict(gallery)[choice].read_bytes()))
    if not inputs:
        st.info("Upload one or more dermoscopic images, or pick a sample, to see a prediction.")
        return
    rows = []
    for name, data in inputs:
        key, image, result = analysed(name, data, classifier, tta=tta)
        if image is None:
            st.error(f"Could not use {result}")
            continue
        rows.append((name, key, image, result))
    if not rows:
        return
    if len(rows) > 1:
        st.markdown("### Results")
        results_table(rows)
        picked = st.selectbox("Show details for", range(len(rows)), format_func=lambda i: rows[i][0])
        rows = [rows[picked]]
    name, key, image, prediction = rows[0]
    detail(name, key, image, prediction, classifier, model_name)


guarded(render)
