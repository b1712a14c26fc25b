"""The Learn case bank: about ten held-out test-split cases per class, shipped in assets/learn.

Built reproducibly from the data folder and the shipped models' split (rebuilt from its seed and
checked against the manifest's fingerprint), so no case was ever a training or validation image.
Files get neutral names (case-017.jpg) in a shuffled order: nothing shown before Reveal hints at
the answer. cases.csv carries the ground truth and the HAM10000 metadata.
"""

import csv
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from core.classes import CLASSES
from core.data.ham10000 import DatasetError, METADATA_FILE, find_mask, load_ham10000
from core.data.preprocess import load_image
from core.data.split import recompute_split

CASES_FILE = "cases.csv"
CREDIT = ("Cases: HAM10000 (Tschandl, Rosendahl, Kittler, Sci. Data 5, 180161, 2018), CC BY-NC 4.0; lesion masks: "
          "Tschandl et al., Nat. Med. 26, 1229-1234, 2020. Images downsized; shown for education, non-commercially.")
MAX_SIDE = 300  # official-layout images (600x450) are shipped downsized
CONFIRMATION = {"histo": "histopathology", "follow_up": "follow-up examination",
                "consensus": "expert consensus", "confocal": "in-vivo confocal microscopy"}


@dataclass(frozen=True)
class Case:
    case_id: str  # neutral: "case-017"
    file: str
    mask_file: str  # "" when HAM10000 has no segmentation mask for it
    image_id: str
    lesion_id: str
    dx: str
    dx_type: str
    age: str
    sex: str
    localization: str

    @property
    def age_text(self) -> str:
        """The age as HAM10000 gives it in whole years ("75", not "75.0"), or "unknown"."""
        try:
            return f"{float(self.age):.0f}"
        except ValueError:
            return "unknown"

    @property
    def confirmation(self) -> str:
        return CONFIRMATION.get(self.dx_type, self.dx_type)


def _metadata(data_dir: Path) -> dict:
    with open(Path(data_dir) / METADATA_FILE, newline="", encoding="utf-8") as f:
        return {row["image_id"]: row for row in csv.DictReader(f)}


def pick_cases(records, test_ids, per_class: int, seed: int) -> list:
    """Up to `per_class` test-split records per class, one image per lesion, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picked = []
    for dx in CLASSES:
        seen, pool = set(), []
        for r in records:
            if r.dx == dx and r.image_id in test_ids and r.lesion_id not in seen:
                seen.add(r.lesion_id)
                pool.append(r)
        take = min(per_class, len(pool))
        picked += [pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False))]
    return [picked[i] for i in rng.permutation(len(picked))]


def build_case_bank(data_dir, out, seed: int, expected_fingerprint: str = None, per_class: int = 10,
                    split_seed: int = 42) -> list:
    """Write the case images, masks and cases.csv to `out` (replacing what is there); returns the cases."""
    data_dir, out = Path(data_dir), Path(out)
    records = load_ham10000(data_dir)
    split = recompute_split(records, split_seed, expected_fingerprint)
    meta = _metadata(data_dir)
    chosen = pick_cases(records, set(split["test"]), per_class, seed)
    if not chosen:
        raise DatasetError(f"no test-split images found below {data_dir}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cases = []
    for n, record in enumerate(chosen, start=1):
        case_id = f"case-{n:03d}"
        image = load_image(record.path)
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        image.save(tmp / f"{case_id}.jpg", quality=92)
        mask_path = find_mask(data_dir, record.image_id)
        mask_file = ""
        if mask_path:
            mask_file = f"{case_id}_mask.png"
            Image.open(mask_path).convert("L").resize(image.size, Image.NEAREST).save(tmp / mask_file, optimize=True)
        row = meta[record.image_id]
        cases.append(Case(case_id, f"{case_id}.jpg", mask_file, record.image_id, record.lesion_id, record.dx,
                          row.get("dx_type", ""), row.get("age", ""), row.get("sex", ""), row.get("localization", "")))
    (tmp / "README.md").write_text(f"# Learn case bank\n\n{CREDIT}\n\nTest-split cases only; rebuild with "
                                   "`python -m core.learn --data-dir DIR` (see core/learn/case_bank.py).\n")
    with open(tmp / CASES_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Case)])
        writer.writeheader()
        writer.writerows(asdict(c) for c in cases)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return cases


def load_case_bank(folder) -> list:
    """The shipped cases, in case-id order."""
    path = Path(folder) / CASES_FILE
    if not path.is_file():
        raise DatasetError(f"no case bank at {path}; build it with `python -m core.learn --data-dir DIR`")
    with open(path, newline="", encoding="utf-8") as f:
        return sorted((Case(**row) for row in csv.DictReader(f)), key=lambda c: c.case_id)
