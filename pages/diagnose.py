"""Diagnose: upload or pick images, see the calibrated prediction, explanations and a PDF report."""

import base64
import datetime as dt
import io

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.classes import CLASSES, FULL_NAMES
from core.explain.heatmaps import METHOD_LABELS, describe_settings, overlay_heatmap, plain_caption
from core.service.pdf_report import build_pdf_report
from pages.common import (MODEL_LABELS, UPLOAD_TYPES, analysed, await_result, data_credit, disclaimer, gallery_items,
                          get_model, guarded, model_banner, referral_line, request_explanation)

METHODS = ("gradcam", "scorecam", "lime")
def probability_chart(prediction):
    classes = list(prediction.probabilities)
    values = [prediction.probabilities[c] for c in classes]
    colors = ["#b91c1c" if c in ("mel", "bcc", "akiec") else "#0e7490" for c in classes]
    fig = go.Figure(go.Bar(x=values, y=[f"{FULL_NAMES[c]} ({c})" for c in classes], orientation="h",
                           marker_color=colors, text=[f"{v:.1%}" for v in values], textposition="auto"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(range=[0, 1], tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), title="Calibrated probabilities (red: suspicious classes)")
    return fig


def not_dermoscopic(prediction, key) -> bool:
    """The refusal for an image that is not a dermoscopic lesion image; True when the clinician asked to see
    the model's output anyway."""
    st.error("**Not a dermoscopic image of a skin lesion — no diagnosis given.** Please upload a dermoscopic "
             "image (taken through a dermatoscope, lesion centred).\n\n"
             + "\n".join(f"- {r}" for r in prediction.reasons))
    return st.toggle("Show the model's output anyway (not a diagnosis)", key=f"anyway-{key}")


def headline(prediction, shown_on_request: bool = False):
    if shown_on_request:
        st.warning(f"**Shown on request for an image that is not dermoscopic — not a diagnosis.** The model's top "
                   f"class: {prediction.full_name} ({prediction.confidence:.0%}).")
    elif prediction.uncertain:
        st.warning(f"**Uncertain** — no confident answer. Most likely: {prediction.full_name} "
                   f"({prediction.confidence:.0%}).\n\n" + "\n".join(f"- {r}" for r in prediction.reasons))
    else:  # neutral blue: a class answer, not a reassurance (the referral line below says what it means)
        st.info(f"**{prediction.full_name}** ({prediction.label}) — {prediction.confidence:.0%} calibrated confidence")
    referral_line(prediction)
    for w in prediction.warnings:
        st.info(w)


def detail(name, key, image, prediction, classifier, model_name):
    st.subheader(name)
    left, right = st.columns([1, 2])
    with left:
        st.image(image, caption=f"{image.width}×{image.height}", width="stretch")
    with right:
        anyway = False
        if not prediction.dermoscopic:
            anyway = not_dermoscopic(prediction, key)
            if not anyway:
                return
        headline(prediction, shown_on_request=anyway)
        st.plotly_chart(probability_chart(prediction), width="stretch")
    top3 = pd.DataFrame([{"Rank": i + 1, "Class": FULL_NAMES[c], "Code": c, "Probability": f"{p:.1%}"}
                         for i, (c, p) in enumerate(prediction.top(3))])
    st.markdown("**Differential (top 3)**")
    st.dataframe(top3, hide_index=True, width="stretch")
    # `image` is the working copy (core.data.preprocess.working_copy) that was predicted on: maps see the same pixels
    target, overlays, settings = explanations(key, image, prediction, classifier, model_name)
    report_download(name, key, image, prediction, classifier, target, overlays, settings)


def explanations(key, work, prediction, classifier, model_name):
    """(explained class, {method label: overlay}, {method label: settings}); empty until the teacher's
    costly maps are asked for."""
    st.markdown("### Explanations")
    c1, c2 = st.columns(2)
    target = c1.selectbox("Explain class", CLASSES, index=CLASSES.index(prediction.label),
                          format_func=lambda c: f"{FULL_NAMES[c]} ({c})", key=f"target-{key}")
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key=f"opacity-{key}")
    if model_name == "teacher" and not st.toggle(
            "Compute the teacher's explanations (slow: the teacher is many times larger than the student)",
            key=f"teacher-maps-{key}"):
        st.caption("The teacher's maps are computed on request; the student's take a few seconds.")
        return target, {}, {}
    cols = st.columns(4)
    cols[0].image(work, caption="Original", width="stretch")
    # All three are queued at once in the shared pool; each fills its own column when ready.
    requests = {m: request_explanation(classifier, key, work, m, target) for m in METHODS}
    overlays, settings, notes = {}, {}, {}
    for col, method in zip(cols[1:], METHODS):
        with col:
            with st.spinner(f"{METHOD_LABELS[method]} ..."):
                e = await_result(*requests[method])
            overlay = overlay_heatmap(work, e.heatmap, opacity, e.outline)
            overlays[METHOD_LABELS[method]] = overlay
            settings[METHOD_LABELS[method]] = describe_settings(method, e.settings)
            notes[METHOD_LABELS[method]] = e.notes
            st.image(overlay, caption=f"{METHOD_LABELS[method]} · {e.seconds:.1f} s", width="stretch")
            st.caption(plain_caption(method, e.settings, FULL_NAMES[target].lower()))
    with st.expander("How these maps were made"):
        for name, text in settings.items():
            st.caption(f"**{name}**: {text}" + "".join(f" {n}" for n in notes[name]))
        st.caption("Settings are chosen per model file on validation images with lesion masks "
                   "(`python -m core.explain.search`); trust figures come from held-out test images "
                   "(`python -m core.explain --evaluate --split test --n 30 --record`). See docs/explanations.md.")
    return target, overlays, settings


def report_download(name, key, work, prediction, classifier, target, overlays, settings):
    """PDF report with an optional identifier and note typed here (printed in the PDF, kept nowhere else)."""
    st.markdown("### Report")
    c1, c2 = st.columns([1, 2])
    identifier = c1.text_input("Patient / lesion identifier (optional)", key=f"ident-{key}", max_chars=60)
    note = c2.text_input("Clinician note (optional)", key=f"note-{key}", max_chars=500)

    def pdf():  # built when the button is clicked, not on every rerun of every session
        return build_pdf_report(work, name, prediction, overlays, classifier.identity, target=target,
                                identifier=identifier, note=note, now=dt.datetime.now(dt.timezone.utc),
                                settings=settings)

    stem = "-".join(filter(None, ["dermadistill", dt.date.today().isoformat(), safe_file_part(identifier)]))
    st.download_button("Download PDF report", pdf, file_name=f"{stem}.pdf", mime="application/pdf",
                       key=f"pdf-{key}")


def safe_file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text.strip())[:40]


def thumbnail_uri(image, side: int = 96) -> str:
    """A small JPEG of the image as a data URI, for the batch table's picture column (never written to disk)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def results_table(rows):
    """One row per image, highest malignancy risk first; images that are not dermoscopic get no answer."""
    records = []
    for n, _, image, p in rows:
        answered = p.dermoscopic
        refer = {True: "yes", False: "no", None: "no validated threshold"}[p.referral]
        records.append({"image": thumbnail_uri(image), "file": n, "refer": refer if answered else "—",
                        "malignancy risk": f"{p.malignancy_risk:.0%}" if answered else "—",
                        "top class": f"{p.full_name} ({p.label})" if answered else "not a dermoscopic image",
                        "confidence": f"{p.confidence:.0%}" if answered else "—",
                        "uncertain": p.uncertain, "_risk": p.malignancy_risk if answered else -1.0})
    df = pd.DataFrame(records).sort_values("_risk", ascending=False).drop(columns="_risk")
    st.dataframe(df, hide_index=True, width="stretch", row_height=56,
                 column_config={"image": st.column_config.ImageColumn("image", width="small")})
    buf = io.StringIO()
    df.drop(columns="image").to_csv(buf, index=False)
    st.download_button("Download results (CSV)", buf.getvalue(), file_name="dermadistill-results.csv", mime="text/csv")


def render():
    st.title("Diagnose")
    disclaimer()
    model_name = st.radio("Model", ["student", "quantized", "teacher"], format_func=MODEL_LABELS.get, horizontal=True)
    classifier, error = get_model(model_name)
    if error:
        st.error(error)
        return
    model_banner(classifier)
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
