"""A clinic's own labelled images, evaluated like the held-out sets: checked (core.data.labelled_upload),
decoded through the one preprocessing path into memory, and reported per model by `split_report`.

Nothing of the upload stays on the server: it is unpacked into a private temporary folder that is removed as
soon as the images are decoded, and decoded arrays are never written to the image cache.
"""

import csv
import io
import tempfile
from dataclasses import dataclass, field

import numpy as np

from core.classes import CLASSES

from core.data.labelled_upload import read_files, read_zip
from core.data.preprocess import load_image, resize_uint8
from core.evaluation.calibration import referral_key
from core.evaluation.report import model_outputs_on, split_report


@dataclass
class DecodedSet:
    image_ids: list
    labels: np.ndarray
    lesions: np.ndarray
    images: dict  # input size -> N x S x S x 3 uint8
    class_counts: dict
    warnings: list = field(default_factory=list)


def decode_upload(sizes, zip_bytes: bytes = None, csv_bytes: bytes = None, images=()) -> DecodedSet:
    """Check an upload (a zip, or a CSV and [(name, bytes)] images) and decode it at each model input size.
    Raises core.data.labelled_upload.UploadError listing every problem."""
    with tempfile.TemporaryDirectory(prefix="dermadistill-upload-") as folder:
        labelled = read_zip(zip_bytes, folder) if zip_bytes is not None else read_files(csv_bytes, images, folder)
        records = labelled.records
        decoded = [load_image(r.path) for r in records]
        arrays = {size: np.stack([resize_uint8(im, size) for im in decoded]) for size in sorted(set(sizes))}
    return DecodedSet([r.image_id for r in records], np.array([r.label for r in records]),
                      np.array([r.lesion_id for r in records]), arrays, labelled.class_counts, labelled.warnings)


def outputs_part(classifier, decoded: DecodedSet, rows: slice):
    """One model's outputs on the images `rows` of the decoded set (one job of a server's evaluation)."""
    return model_outputs_on(classifier, decoded.images[classifier.config.img_size][rows])


def report_on(classifier, decoded: DecodedSet, outputs=None) -> dict:
    """`split_report` of one model on the decoded set, with per-image predictions for the download; `outputs`:
    the model's outputs on all images, joined from `outputs_part` jobs (else computed here)."""
    gate = classifier.gate
    return split_report(classifier, decoded.images[classifier.config.img_size], decoded.labels,
                        groups=decoded.lesions, gate_images=decoded.images.get(gate.config.img_size) if gate else None,
                        keep_predictions=True, outputs=outputs)


def spreadsheet_safe(value) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula (uploaded ids are untrusted)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def predictions_csv(decoded: DecodedSet, reports: dict, target: float) -> str:
    """Per image: id, true class, and per model its class, malignancy risk, referral at `target`, refusal."""
    buffer = io.StringIO()
    columns = ["image_id", "dx"] + [f"{name}_{what}" for name in reports
                                    for what in ("class", "malignancy_risk", "refer", "not_dermoscopic")]
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for i, image_id in enumerate(decoded.image_ids):
        row = [spreadsheet_safe(image_id), CLASSES[decoded.labels[i]]]
        for report in reports.values():
            pred = report["predictions"]
            threshold = report["triage"].get(referral_key(target), {}).get("threshold")
            risk = pred["malignancy_risk"][i]
            row += [CLASSES[int(np.argmax(pred["probabilities"][i]))], f"{risk:.4f}",
                    "" if threshold is None else ("yes" if risk >= threshold else "no"),
                    "yes" if pred["not_dermoscopic"][i] else "no"]
        writer.writerow(row)
    return buffer.getvalue()
