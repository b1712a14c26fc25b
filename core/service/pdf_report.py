"""Downloadable PDFs (fpdf2). The per-image report: image, prediction, referral advice, explanation overlays and
the class they explain, the answering model's identity, date and time, and the disclaimer. The one-page summary of
a labelled set evaluated on Compare models ("Your images")."""

import datetime as dt

import numpy as np
from fpdf import FPDF

from core.classes import FULL_NAMES
from core.evaluation.report import summary_rows

DISCLAIMER = ("DermaDistill is decision support and education software, not a diagnostic device. "
              "It does not replace examination by a qualified clinician; histopathology remains the reference "
              "standard. Suspicious or changing lesions should be referred.")
DATA_CREDIT = ("Model trained on HAM10000 (Tschandl et al., Sci. Data 2018), CC BY-NC 4.0. "
               "Sample images from HAM10000 are shown under the same licence.")


def _latin1(text: str) -> str:
    """The PDF core fonts are latin-1: replace what they cannot draw rather than fail."""
    text = str(text).replace("\u2014", "-").replace("\u2013", "-").replace("\u2019", "'")
    return text.encode("latin-1", "replace").decode("latin-1")


def build_pdf_report(image, file_label: str, prediction, explanations: dict, model: dict, target: str = None,
                     identifier: str = "", note: str = "", now=None, settings: dict = None) -> bytes:
    """PDF bytes. `model`: the answering model's identity (Classifier.identity); `explanations`: method label ->
    PIL overlay image of class `target` (missing ones are skipped); `settings`: method label -> the settings
    it was made with; `identifier`, `note`: typed by the clinician, printed here and kept nowhere else."""
    now = now or dt.datetime.now(dt.timezone.utc)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, "DermaDistill - lesion classification report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=9)
    lines = [f"Patient / lesion: {identifier}" if identifier else "", f"Image: {file_label}",
             f"Model: {model.get('name', '')} (file sha256 {model.get('sha256', '')}, {model.get('date', '')[:10]}; "
             f"{model.get('source', '')})" + (" - DEMO MODEL, not for clinical use" if model.get("demo") else ""),
             f"Calibration: {model['site_calibration']}" if model.get("site_calibration") else
             "Calibration: fitted on the HAM10000 validation split (no site calibration)",
             f"Generated: {now.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    pdf.multi_cell(0, 5, _latin1("\n".join(line for line in lines if line)), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("helvetica", "B", 12)
    if not prediction.dermoscopic:
        pdf.multi_cell(0, 7, "NOT A DERMOSCOPIC IMAGE OF A SKIN LESION - no diagnosis given. The model output below "
                             "was shown on request and is not a diagnosis.", new_x="LMARGIN", new_y="NEXT")
    verdict = "UNCERTAIN - " if prediction.uncertain else ""
    pdf.multi_cell(0, 7, _latin1(f"{verdict}Top class: {prediction.full_name} ({prediction.label}), "
                                 f"calibrated confidence {prediction.confidence:.1%}"), new_x="LMARGIN", new_y="NEXT")
    referral = prediction.referral_text()
    if referral:
        pdf.set_font("helvetica", "B" if prediction.referral else "", 10)
        pdf.multi_cell(0, 6, _latin1(referral), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=10)
    for line in prediction.reasons + prediction.warnings:
        pdf.multi_cell(0, 6, _latin1(f"Note: {line}"), new_x="LMARGIN", new_y="NEXT")
    if note:
        pdf.multi_cell(0, 6, _latin1(f"Clinician note: {note}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    with pdf.table(col_widths=(20, 90, 30), text_align=("LEFT", "LEFT", "RIGHT")) as table:
        table.row(["Class", "Name", "Probability"])
        for code, p in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
            table.row([code, FULL_NAMES[code], f"{p:.1%}"])
    pdf.ln(4)
    panels = [("Original", image)] + [(k, v) for k, v in explanations.items() if v is not None]
    if len(panels) > 1 and target:
        pdf.set_font("helvetica", size=9)
        pdf.multi_cell(0, 5, _latin1(f"Maps explain the class {FULL_NAMES[target]} ({target}); warm colours raised "
                                     "its score. They show what the model used, not where the pathology is."),
                       new_x="LMARGIN", new_y="NEXT")
    width = (pdf.w - pdf.l_margin - pdf.r_margin - 3 * (len(panels) - 1)) / len(panels)
    height = width * image.height / image.width
    if pdf.get_y() + height + 12 > pdf.h - pdf.b_margin:
        pdf.add_page()
    y = pdf.get_y()
    pdf.set_font("helvetica", "B", 9)
    for i, (label, panel) in enumerate(panels):
        x = pdf.l_margin + i * (width + 3)
        pdf.set_xy(x, y)
        pdf.cell(width, 5, _latin1(label))
        pdf.image(panel.convert("RGB"), x=x, y=y + 6, w=width, h=height)
    pdf.set_y(y + height + 10)
    pdf.set_font("helvetica", size=8)
    for label, text in (settings or {}).items():
        pdf.multi_cell(0, 4, _latin1(f"{label}: {text}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "I", 8)
    pdf.multi_cell(0, 4, _latin1(DISCLAIMER + " " + DATA_CREDIT), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())



def build_set_summary_pdf(decoded, models: dict, target_key: str, sets: dict, now=None) -> bytes:
    """One-page PDF of a labelled set (`decoded`: core.evaluation.clinic.DecodedSet) evaluated by each model:
    `models`: name -> {set key: report}, the set under "yours" beside the held-out sets named in `sets`. Says what
    the intervals resample and how to re-run the figures."""
    rows = summary_rows(models, target_key, sets)
    class_counts = decoded.class_counts
    recall = {name: {c: m["yours"]["per_class"][c]["recall"] for c in class_counts} for name, m in models.items()}
    lesion_ids = bool(np.any(decoded.lesions != np.array(decoded.image_ids)))
    now = now or dt.datetime.now(dt.timezone.utc)
    pdf = FPDF(format="A4", orientation="landscape")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 15)
    pdf.cell(0, 9, "DermaDistill - evaluation on your labelled images", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=9)
    pdf.multi_cell(0, 5, _latin1(
        f"{sum(class_counts.values())} images: " + ", ".join(f"{c} {k}" for c, k in class_counts.items()) +
        f". 95% bootstrap intervals (your images: resampling {'lesions' if lesion_ids else 'images'}). Referral: "
        "malignancy risk P(mel)+P(bcc)+P(akiec) at each model's threshold chosen on HAM10000 validation for "
        f"{float(target_key):.0%} sensitivity. Generated {now.strftime('%Y-%m-%d %H:%M %Z')}. The same figures: "
        "python -m core.evaluate --model NAME --images DIR --labels CSV."), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("helvetica", size=7)
    columns = list(rows[0]) if rows else []
    with pdf.table(col_widths=(14, 40, 26, 26, 26, 14, 26, 26, 16)[:len(columns)]) as table:
        table.row(columns)
        for row in rows:
            table.row([_latin1(row[c]) for c in columns])
    pdf.ln(3)
    pdf.set_font("helvetica", "B", 9)
    pdf.cell(0, 6, "Recall per class on your images", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=8)
    with pdf.table(col_widths=(30,) + (20,) * len(class_counts)) as table:
        table.row(["model"] + [f"{c} (n={k})" for c, k in class_counts.items()])
        for name, per_class in recall.items():
            table.row([name] + [f"{per_class[c]:.2f}" for c in class_counts])
    pdf.ln(3)
    pdf.set_font("helvetica", "I", 7)
    pdf.multi_cell(0, 4, _latin1(DISCLAIMER + " " + DATA_CREDIT), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
