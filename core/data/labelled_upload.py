"""A clinic's labelled image set from a browser upload, checked before any model work.

Two shapes: one zip holding images and a CSV (`image_id,dx`, optional `lesion_id`), or a CSV plus the images as
separate files. The upload is hostile until proven otherwise: entry names are never used as paths (files are
written as numbered files inside a private temporary folder), symlinks, absolute or `..` names, nested archives,
too many entries, and sizes beyond the limits are refused, and every entry is read with a cap on its actual size
(a zip bomb's declared sizes lie). Every problem is collected and reported at once, one message each.
"""

import csv
import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.classes import CLASS_TO_INDEX, CLASSES
from core.data.ham10000 import Record
from core.data.preprocess import ImageError, load_image

MAX_UPLOAD_BYTES = 200 * 2**20  # the zip, or the CSV and images together
MAX_ENTRIES = 5000
MAX_IMAGE_BYTES = 25 * 2**20  # as for a single upload on Diagnose
MAX_TOTAL_BYTES = 1 * 2**30  # uncompressed
MAX_RATIO = 200  # uncompressed / compressed size of one entry; JPEG and PNG barely compress
MAX_CSV_BYTES = 5 * 2**20
MAX_CSV_COLUMNS = 50
MIN_IMAGES = 20  # below this no figure means anything
MIN_PER_CLASS = 5  # a class with fewer images gets a warning: its recall is not meaningful
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class UploadError(ValueError):
    """The upload cannot be evaluated; `problems` lists every reason, one message each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class LabelledSet:
    records: list  # core.data.ham10000.Record, paths inside the temporary folder
    warnings: list = field(default_factory=list)

    @property
    def class_counts(self) -> dict:
        return {c: sum(r.dx == c for r in self.records) for c in CLASSES if any(r.dx == c for r in self.records)}


def _unsafe_name(info: zipfile.ZipInfo):
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"{name}: absolute path"
    if ".." in parts:
        return f"{name}: path leaves the archive ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"{name}: symbolic link"
    if name.lower().endswith((".zip", ".tar", ".gz", ".7z", ".rar")):
        return f"{name}: nested archive (unpack it and upload the images)"
    return None


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """The entry's bytes, refusing more than `cap` or more than it declared (a lying header)."""
    with archive.open(info) as f:
        data = f.read(min(cap, info.file_size) + 1)
    if len(data) > min(cap, info.file_size):
        raise UploadError([f"{info.filename}: larger than declared or than {cap // 2**20} MB"])
    return data


def read_zip(data: bytes, folder) -> LabelledSet:
    """Check and unpack a zip of images + one CSV into `folder` (a private temporary folder)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError([f"the upload is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"])
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError([f"not a readable zip file ({exc})"]) from None
    problems = [p for p in map(_unsafe_name, infos) if p]
    if len(infos) > MAX_ENTRIES:
        problems.append(f"{len(infos)} files in the zip; the limit is {MAX_ENTRIES}")
    declared = sum(i.file_size for i in infos)
    if declared > MAX_TOTAL_BYTES:
        problems.append(f"the zip unpacks to {declared / 2**30:.1f} GB; the limit is {MAX_TOTAL_BYTES // 2**30} GB")
    problems += [f"{i.filename}: compression ratio {i.file_size / max(i.compress_size, 1):.0f}:1 (a zip bomb?)"
                 for i in infos if i.file_size > 2**20 and i.file_size / max(i.compress_size, 1) > MAX_RATIO]
    csvs = [i for i in infos if i.filename.lower().endswith(".csv") and not PurePosixPath(i.filename).name.startswith(".")]
    if len(csvs) != 1:
        problems.append("the zip needs exactly one CSV file with image_id and dx columns"
                        + (f" (found {len(csvs)}: {', '.join(i.filename for i in csvs[:5])})" if csvs else ""))
    if problems:
        raise UploadError(problems)
    try:
        csv_bytes = _read_capped(archive, csvs[0], MAX_CSV_BYTES)
        images = [(PurePosixPath(i.filename.replace("\\", "/")).name, _read_capped(archive, i, MAX_IMAGE_BYTES))
                  for i in infos if i.filename.lower().endswith(IMAGE_SUFFIXES)
                  and not PurePosixPath(i.filename).name.startswith(".")]
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:  # damaged or encrypted entries
        raise UploadError([f"the zip cannot be read: {exc}"]) from None
    return read_files(csv_bytes, images, folder)


def read_csv(data: bytes) -> list:
    """Rows of the label CSV as dicts: UTF-8 (with or without BOM), else Latin-1; cells are data, never formulas."""
    if len(data) > MAX_CSV_BYTES:
        raise UploadError([f"the CSV is {len(data) / 2**20:.1f} MB; the limit is {MAX_CSV_BYTES // 2**20} MB"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        if len(header) > MAX_CSV_COLUMNS:
            raise UploadError([f"the CSV has {len(header)} columns; at most {MAX_CSV_COLUMNS} are read"])
        missing = {"image_id", "dx"} - set(header)
        if missing:
            raise UploadError([f"the CSV lacks the column(s) {', '.join(sorted(missing))} "
                               f"(its header: {', '.join(header[:10]) or 'empty'})"])
        return [dict(zip(header, (cell.strip() for cell in row))) for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise UploadError([f"the CSV cannot be parsed: {exc}"]) from None


def read_files(csv_bytes: bytes, images, folder) -> LabelledSet:
    """Check a CSV and its images ([(file name, bytes)]) and write the images as numbered files into `folder`."""
    rows = read_csv(csv_bytes)
    problems, warnings = [], []
    if sum(len(b) for _, b in images) > MAX_UPLOAD_BYTES:
        problems.append(f"the images add up to more than {MAX_UPLOAD_BYTES // 2**20} MB")
    by_stem = {}
    for name, data in images:
        by_stem.setdefault(PurePosixPath(name).stem, []).append(data)
    ids = [r["image_id"] for r in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"image_id listed more than once: {', '.join(duplicates[:10])}")
    twice = sorted(stem for stem, files in by_stem.items() if len(files) > 1 and stem in ids)
    if twice:
        problems.append(f"several image files for one image_id: {', '.join(twice[:10])}")
    unknown = sorted({r["dx"] for r in rows if r["dx"] not in CLASS_TO_INDEX})
    if unknown:
        problems.append(f"unknown dx label(s) {', '.join(repr(u) for u in unknown[:10])} (known: {', '.join(CLASSES)})")
    missing = [i for i in ids if i not in by_stem]
    if missing:
        problems.append(f"{len(missing)} image(s) listed in the CSV but not uploaded: {', '.join(missing[:10])}")
    records = []
    folder = Path(folder)
    for n, row in enumerate(r for r in rows if r["image_id"] in by_stem and r["dx"] in CLASS_TO_INDEX):
        data = by_stem[row["image_id"]][0]
        try:
            load_image(data)  # decodes the whole image: a .jpg that is not an image is refused here
        except ImageError as exc:
            problems.append(f"{row['image_id']}: {exc}")
            continue
        path = folder / f"{n:05d}.img"  # never the uploaded name
        path.write_bytes(data)
        records.append(Record(row["image_id"], row.get("lesion_id") or row["image_id"], row["dx"], path))
    if not problems and len(records) < MIN_IMAGES:
        problems.append(f"only {len(records)} labelled images: at least {MIN_IMAGES} are needed for any figure")
    if problems:
        raise UploadError(problems)
    labelled = LabelledSet(records)
    few = [f"{c} ({k})" for c, k in labelled.class_counts.items() if k < MIN_PER_CLASS]
    if few:
        warnings.append(f"fewer than {MIN_PER_CLASS} images for {', '.join(few)}: their recall is not meaningful")
    absent = [c for c in CLASSES if c not in labelled.class_counts]
    if absent:
        warnings.append(f"no images of {', '.join(absent)}: balanced accuracy and AUC cover the other classes only")
    labelled.warnings = warnings
    return labelled
