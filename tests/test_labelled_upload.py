"""A clinic's labelled upload: every hostile or broken shape gets a clear refusal and nothing is written outside
the private folder; a good one is evaluated like core.evaluate, in the app too."""

import csv
import io
import stat
import zipfile

import numpy as np
import pytest

from core.classes import CLASSES
from core.data import labelled_upload
from core.data.labelled_upload import UploadError, read_files, read_zip
from core.evaluation.clinic import decode_upload, predictions_csv, report_on, spreadsheet_safe
from tests.conftest import FIXTURE, ROOT

IMAGES = sorted((FIXTURE / "images").glob("*.jpg"))
META = {row["image_id"]: row for row in csv.DictReader(open(FIXTURE / "HAM10000_metadata.csv"))}


def labels_csv(ids, extra_header="", extra_cells=lambda i: "") -> bytes:
    lines = [f"image_id,dx,lesion_id{extra_header}"]
    lines += [f"{i},{META[i]['dx']},{META[i]['lesion_id']}{extra_cells(i)}" for i in ids]
    return ("\n".join(lines) + "\n").encode()


def make_zip(entries) -> bytes:
    """entries: [(name, bytes)] or [(ZipInfo, bytes)]."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def good_entries():
    return [("set/labels.csv", labels_csv([p.stem for p in IMAGES]))] + [(f"set/img/{p.name}", p.read_bytes())
                                                                        for p in IMAGES]


def refusal(tmp_path, data) -> str:
    with pytest.raises(UploadError) as exc:
        read_zip(data, tmp_path)
    assert list(tmp_path.iterdir()) == [] or all(p.suffix == ".img" for p in tmp_path.iterdir())
    return str(exc.value)


def test_good_zip_reads_every_image_into_numbered_files(tmp_path):
    labelled = read_zip(make_zip(good_entries()), tmp_path)
    assert len(labelled.records) == len(IMAGES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n:05d}.img" for n in range(len(IMAGES))]
    assert {r.lesion_id for r in labelled.records} == {META[p.stem]["lesion_id"] for p in IMAGES}


@pytest.mark.parametrize("name,message", [
    ("../evil.jpg", "leaves the archive"), ("/etc/evil.jpg", "absolute path"), ("C:/evil.jpg", "absolute path"),
    ("inner.zip", "nested archive")])
def test_dangerous_names_are_refused(tmp_path, name, message):
    assert message in refusal(tmp_path, make_zip(good_entries() + [(name, IMAGES[0].read_bytes())]))


def test_symlink_is_refused(tmp_path):
    link = zipfile.ZipInfo("set/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    assert "symbolic link" in refusal(tmp_path, make_zip(good_entries() + [(link, b"/etc/passwd")]))


def test_zip_bomb_is_refused(tmp_path):
    assert "zip bomb" in refusal(tmp_path, make_zip(good_entries() + [("set/bomb.jpg", b"\0" * (60 * 2**20))]))


def test_lying_size_header_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(labelled_upload, "MAX_IMAGE_BYTES", 1000)
    assert "larger than declared or than" in refusal(tmp_path, make_zip(good_entries()))


def test_too_many_entries_and_too_large_upload(tmp_path, monkeypatch):
    monkeypatch.setattr(labelled_upload, "MAX_ENTRIES", 10)
    assert "files in the zip; the limit is 10" in refusal(tmp_path, make_zip(good_entries()))
    monkeypatch.setattr(labelled_upload, "MAX_UPLOAD_BYTES", 1000)
    assert "the limit is 0 MB" in refusal(tmp_path, make_zip(good_entries()))


def test_not_a_zip(tmp_path):
    assert "not a readable zip" in refusal(tmp_path, b"PK\x03\x04 but not really a zip")


def test_every_problem_is_listed_at_once(tmp_path):
    ids = [p.stem for p in IMAGES]
    bad_csv = labels_csv(ids).decode() + "ISIC_nothere,mel,HAM_x\nISIC_0000000,cancer,HAM_y\n" + f"{ids[0]},nv,HAM_z\n"
    entries = [("labels.csv", bad_csv.encode())] + [(p.name, p.read_bytes()) for p in IMAGES]
    entries.append(("ISIC_fake.jpg", b"this is text, not a JPEG"))
    message = refusal(tmp_path, make_zip(entries))
    assert "ISIC_nothere" in message and "cancer" in message and "more than once" in message


def test_non_image_named_jpg(tmp_path):
    ids = [p.stem for p in IMAGES] + ["ISIC_fake"]
    META["ISIC_fake"] = {"dx": "nv", "lesion_id": "HAM_fake"}
    try:
        entries = [("labels.csv", labels_csv(ids))] + [(p.name, p.read_bytes()) for p in IMAGES]
        message = refusal(tmp_path, make_zip(entries + [("ISIC_fake.jpg", b"<html>not an image</html>")]))
    finally:
        del META["ISIC_fake"]
    assert "ISIC_fake: not a readable image" in message


@pytest.mark.parametrize("encoding", ["utf-8-sig", "latin-1"])
def test_csv_with_bom_or_latin1(tmp_path, encoding):
    ids = [p.stem for p in IMAGES]
    text = labels_csv(ids, ",note", lambda i: ",Läsion é").decode()
    labelled = read_files(text.encode(encoding), [(p.name, p.read_bytes()) for p in IMAGES], tmp_path)
    assert len(labelled.records) == len(IMAGES)


def test_csv_problems(tmp_path):
    images = [(p.name, p.read_bytes()) for p in IMAGES]
    with pytest.raises(UploadError, match="lacks the column"):
        read_files(b"file,label\nx,y\n", images, tmp_path)
    wide = ",".join(["image_id", "dx"] + [f"c{i}" for i in range(5000)]).encode() + b"\n"
    with pytest.raises(UploadError, match="5002 columns"):
        read_files(wide, images, tmp_path)
    with pytest.raises(UploadError, match="at least 20"):
        read_files(labels_csv([p.stem for p in IMAGES[:5]]), images[:5], tmp_path)


def test_formula_cells_stay_data():
    assert spreadsheet_safe("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert spreadsheet_safe("ISIC_0024306") == "ISIC_0024306"


def test_upload_figures_equal_core_evaluate(use_weights, tmp_path):
    """The app's path (decode in memory, split_report) gives the figures of core.evaluate on the same images."""
    from core.data.ham10000 import read_labels
    from core.evaluation.report import records_report
    from core.registry.loader import load_model

    student = load_model("student")
    decoded = decode_upload({student.config.img_size}, zip_bytes=make_zip(good_entries()))
    report = report_on(student, decoded)
    reference = records_report(student, read_labels(FIXTURE / "HAM10000_metadata.csv", FIXTURE))
    for key in ("accuracy", "balanced_accuracy", "auc", "ece", "not_dermoscopic_fraction"):
        assert report[key] == pytest.approx(reference[key], abs=1e-9), key
    assert report["confusion_matrix"] == reference["confusion_matrix"]
    rows = list(csv.DictReader(io.StringIO(predictions_csv(decoded, {"student": report}, 0.9))))
    assert len(rows) == len(IMAGES) and {"student_class", "student_refer"} <= set(rows[0])
    assert np.isclose(float(rows[0]["student_malignancy_risk"]), report["predictions"]["malignancy_risk"][0], atol=1e-4)


def test_one_page_pdf_summary_carries_the_figures(use_weights):
    """The PDF summary of an uploaded set is one page with each model's figures as the app's table prints them."""
    from pypdf import PdfReader

    from core.evaluation.report import summary_rows
    from core.registry.loader import load_model
    from core.service.pdf_report import build_set_summary_pdf

    student = load_model("student")
    decoded = decode_upload({student.config.img_size}, zip_bytes=make_zip(good_entries()))
    models = {"student": {"yours": report_on(student, decoded)}}
    pdf = PdfReader(io.BytesIO(build_set_summary_pdf(decoded, models, "0.90", {"yours": "your images"})))
    text = " ".join(pdf.pages[0].extract_text().split())
    row = summary_rows(models, "0.90", {"yours": "your images"})[0]
    assert len(pdf.pages) == 1
    assert f"your images, n = {len(IMAGES)}" in text and row["balanced accuracy"].split(" ")[0] in text
    assert "resampling lesions" in text and "not a diagnostic device" in text  # the CSV has lesion_id


def test_compare_page_evaluates_a_small_zip(private_weights):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=300)
    at.run()
    at.file_uploader(key="yours-zip").set_value([("clinic.zip", make_zip(good_entries()), "application/zip")])
    at.run()
    at.button(key="yours-go").click().run()
    assert not at.exception
    assert any(f"{len(IMAGES)} images evaluated" in s.value for s in at.success)
    assert {"yours-csv-download", "yours-pdf-download"} <= {b.key for b in at.get("download_button")}
    at.file_uploader(key="yours-zip").set_value([("bad.zip", make_zip([("../x.jpg", b"x")]), "application/zip")])
    at.run()
    at.button(key="yours-go").click().run()
    assert any("cannot be evaluated" in e.value and "leaves the archive" in e.value for e in at.error)


def test_shipped_sample_is_a_valid_upload_and_left_out_of_external_figures(tmp_path):
    """assets/external_sample.zip (the "try it" set) reads as an upload, credits its source, and no external-set
    figure counts its images."""
    from core.data.external_sample import SAMPLE_PATH, sample_ids
    from core.data.ham10000 import load_external
    from core.paths import resolve_external_dir

    labelled = read_zip(SAMPLE_PATH.read_bytes(), tmp_path)
    assert len(labelled.records) == len(sample_ids()) == 21
    assert set(labelled.class_counts) == set(CLASSES) and set(labelled.class_counts.values()) == {3}
    assert "CC BY-NC 4.0" in (ROOT / "assets" / "external_sample.md").read_text()
    external = resolve_external_dir()
    if (external / "labels.csv").is_file():
        ids = {r.image_id for r in load_external(external)}
        assert ids and not ids & sample_ids()
