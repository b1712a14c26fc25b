"""CLI: rebuild the Learn case bank from the data folder and the shipped models' split.

`python -m core.learn --data-dir DIR [--per-class 10] [--seed 0] [--out assets/learn]`
"""

import argparse
import sys
from collections import Counter

from core.data.ham10000 import DatasetError
from core.learn.case_bank import build_case_bank
from core.paths import PROJECT_ROOT, resolve_data_dir
from core.registry.loader import read_manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.learn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="HAM10000 folder (default: $HAM10000_DIR, else data/ham10000)")
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="which test-split cases are drawn, and their numbering")
    p.add_argument("--out", default=str(PROJECT_ROOT / "assets" / "learn"))
    a = p.parse_args(argv)
    student = read_manifest().get("models", {}).get("student", {})
    try:
        cases = build_case_bank(resolve_data_dir(a.data_dir), a.out, a.seed, student.get("split_fingerprint"),
                                a.per_class, int(student.get("seed", 42)))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(c.dx for c in cases)
    print(f"{len(cases)} cases written to {a.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
