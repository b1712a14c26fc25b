"""HAM10000 metadata and image lookup, in the official layout or any layout below one folder.

Images are found by image_id anywhere below the folder (official: HAM10000_images_part_1/ and
_part_2/; the downsized copy: images/). Problems are collected and raised together so that the
user sees every missing file or unknown label at once.
"""

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from core.classes import CLASS_TO_INDEX, CLASSES
from core.data.external_sample import sample_ids

METADATA_FILE = "HAM10000_metadata.csv"
HAM10000_IMAGES = 10015  # the full data set; a run on fewer images (the demo subset, a fixture) is a demo
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """The data folder or label file cannot be used; the message lists what is wrong."""


@dataclass(frozen=True)
class Record:
    image_id: str
    lesion_id: str
    dx: str
    path: Path

    @property
    def label(self) -> int:
        return CLASS_TO_INDEX[self.dx]


def index_images(root: Path) -> dict:
    """image_id -> path for every image file below `root` (segmentation masks excluded)."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith("_segmentation"):
            found.setdefault(path.stem, path)
    return found


def _summarise(items, limit=10) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def read_labels(labels_csv: Path, images_root: Path) -> list:
    """Records for every row of a CSV with image_id and dx columns (lesion_id optional).

    Raises DatasetError naming missing columns, unknown labels and missing images.
    """
    labels_csv, images_root = Path(labels_csv), Path(images_root)
    if not images_root.is_dir():
        raise DatasetError(f"data folder not found: {images_root}")
    if not labels_csv.is_file():
        raise DatasetError(f"label file not found: {labels_csv} (expected {METADATA_FILE} with image_id,dx columns)")
    with open(labels_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing_cols = {"image_id", "dx"} - set(reader.fieldnames or [])
        if missing_cols:
            raise DatasetError(f"{labels_csv} lacks column(s): {', '.join(sorted(missing_cols))}")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{labels_csv} has no rows")
    images = index_images(images_root)
    unknown = sorted({r["dx"] for r in rows if r["dx"] not in CLASS_TO_INDEX})
    missing = [r["image_id"] for r in rows if r["image_id"] not in images]
    problems = []
    if unknown:
        problems.append(f"unknown dx label(s) {_summarise(unknown)} (known: {', '.join(CLASSES)})")
    if missing:
        problems.append(f"{len(missing)} image(s) listed but not found below {images_root}: {_summarise(missing)}")
    if problems:
        raise DatasetError("; ".join(problems))
    return [
        Record(r["image_id"], r.get("lesion_id") or r["image_id"], r["dx"], images[r["image_id"]])
        for r in rows
    ]


def load_ham10000(data_dir: Path) -> list:
    """All records of a HAM10000-layout folder (metadata CSV at its top)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(
            f"data folder not found: {data_dir}. Pass --data-dir or set HAM10000_DIR to a folder "
            f"holding {METADATA_FILE} and the images"
        )
    if not (data_dir / METADATA_FILE).is_file():
        raise DatasetError(f"{data_dir} has no {METADATA_FILE}")
    return read_labels(data_dir / METADATA_FILE, data_dir)


def load_external(external_dir: Path) -> list:
    """Records of a labelled external set: labels.csv (image_id, dx) and the images below the folder, without the
    images shipped in assets/external_sample.zip (they are in the app: no figure may count them as unseen)."""
    external_dir = Path(external_dir)
    if not (external_dir / "labels.csv").is_file():
        raise DatasetError(f"{external_dir} has no labels.csv (image_id,dx)")
    shipped = sample_ids()
    return [r for r in read_labels(external_dir / "labels.csv", external_dir) if r.image_id not in shipped]


def content_duplicate_groups(records) -> dict:
    """image_id -> id of the first byte-identical image, for images whose bytes repeat.

    HAM10000 holds byte-identical pairs under different lesion ids; the split keeps them together.
    """
    first_seen, duplicate_of = {}, {}
    for r in records:
        digest = hashlib.sha1(r.path.read_bytes()).hexdigest()
        if digest in first_seen:
            duplicate_of[r.image_id] = first_seen[digest]
        else:
            first_seen[digest] = r.image_id
    return duplicate_of


def find_mask(data_dir: Path, image_id: str):
    """Path of the lesion segmentation mask for image_id, or None."""
    for path in Path(data_dir).rglob(f"{image_id}_segmentation.png"):
        return path
    return None
