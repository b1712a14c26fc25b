"""The small labelled sample of the external set that ships in assets/ (the "try it" set of "Your images" and a
test fixture), and the ids every external-set figure leaves out because of it."""

import csv
import functools
import io
import zipfile
from pathlib import Path

from core.classes import CLASSES
from core.paths import PROJECT_ROOT

SAMPLE_PATH = PROJECT_ROOT / "assets" / "external_sample.zip"
PER_CLASS = 3


@functools.lru_cache(maxsize=1)
def sample_ids() -> frozenset:
    """Image ids in the shipped sample (empty when it is absent)."""
    if not SAMPLE_PATH.is_file():
        return frozenset()
    with zipfile.ZipFile(SAMPLE_PATH) as z:
        rows = csv.DictReader(io.StringIO(z.read("labels.csv").decode("utf-8")))
        return frozenset(r["image_id"] for r in rows)


def build_sample(external_dir, out=SAMPLE_PATH, per_class: int = PER_CLASS) -> Path:
    """Write the sample: the first `per_class` image ids (sorted) of each class, labels.csv + images/, with fixed
    timestamps so that a rebuild gives the same bytes."""
    external_dir = Path(external_dir)
    with open(external_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image_id"])
    picked = [r for dx in CLASSES for r in [r for r in rows if r["dx"] == dx][:per_class]]
    labels = io.StringIO()
    writer = csv.writer(labels, lineterminator="\n")
    writer.writerow(["image_id", "dx"])
    writer.writerows([r["image_id"], r["dx"]] for r in picked)
    stamp = (2026, 12, 1, 0, 0, 0)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("labels.csv", stamp), labels.getvalue())
        for r in picked:
            z.writestr(zipfile.ZipInfo(f"images/{r['image_id']}.jpg", stamp),
                       (external_dir / "images" / f"{r['image_id']}.jpg").read_bytes())
    sample_ids.cache_clear()
    return Path(out)
