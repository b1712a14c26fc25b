"""CLI: `python -m core.release` (its help is the docstring of core.registry.release, the library behind it)."""

import argparse
import json
import logging
import sys

from core.data.ham10000 import DatasetError
from core.evaluation.report import SUMMARY
from core.models.checkpoint import CheckpointError
from core.registry.loader import read_manifest
from core.registry.manifest_tables import manifest_tables
from core.registry import release as release_lib
from core.registry.release import ReleaseError, add_ablation, release


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m core.release", description=release_lib.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-run")
    p.add_argument("--student-run")
    p.add_argument("--recalibrate", action="store_true",
                   help="keep the shipped teacher and student weights; re-fit and re-evaluate them (see above)")
    p.add_argument("--ablation", default="", help="comma-separated run folders of the student ablation; alone, it "
                                                   "only evaluates them into the shipped manifest's ablation")
    p.add_argument("--data-dir")
    p.add_argument("--external-dir", help="external validation set (default: ../shared/data/isic2018_external_val)")
    p.add_argument("--scratch-teacher", help="checkpoint of a teacher trained from scratch, evaluated on the same "
                                             "test split as the 'teacher from scratch' ablation row")
    p.add_argument("--scratch-teacher-commit", default="",
                   help="git commit of the code that trained --scratch-teacher, written beside its command")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tables", action="store_true", help="print the shipped manifest's headline tables (Markdown)")
    a = p.parse_args(argv)
    if a.tables:
        print(manifest_tables(read_manifest()))
        return 0
    if a.ablation and not (a.recalibrate or a.teacher_run or a.student_run):
        try:  # rows only: the shipped weights and their figures stay as released
            rows = add_ablation(a.ablation, a.data_dir, a.external_dir)
        except (ReleaseError, DatasetError, CheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps([{"name": r["name"], "balanced_accuracy": round(r["balanced_accuracy"], 4),
                           "external_balanced_accuracy": r["external"] and round(r["external"]["balanced_accuracy"], 4)}
                          for r in rows], indent=1))
        return 0
    if a.recalibrate == bool(a.teacher_run or a.student_run):
        p.error("give --teacher-run and/or --student-run (a role without a run keeps its shipped weights), "
                "or --recalibrate alone, or --ablation alone")
    try:
        models = release(teacher_run=a.teacher_run, student_run=a.student_run,
                         ablation=a.ablation, data_dir=a.data_dir, external_dir=a.external_dir,
                         scratch_teacher=a.scratch_teacher, scratch_teacher_commit=a.scratch_teacher_commit,
                         threads=a.threads)
    except (ReleaseError, DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({name: {split: {k: round(m[split][k], 4) for k in SUMMARY}
                             for split in ("test", "external") if split in m} for name, m in models.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
