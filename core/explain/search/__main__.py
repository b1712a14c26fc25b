"""CLI: `python -m core.explain.search --data-dir DIR [--model student] [--n 12] [--methods gradcam,lime]
[--json OUT]` (its help is the docstring of core.explain.setting_search, the library behind it)."""

import argparse
import json
import sys
from pathlib import Path

from core.data.ham10000 import DatasetError
from core.explain.masked_cases import masked_cases
from core.explain import setting_search
from core.explain.setting_search import record, search
from core.registry.loader import load_with_counterpart, shipped_split, with_batch_runtime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.explain.search", description=setting_search.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--model", default="student")
    p.add_argument("--n", type=int, default=12, help="validation images with masks")
    p.add_argument("--methods", default="gradcam,scorecam,lime", help="comma-separated; separate processes may search different methods side by side")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--no-record", action="store_true", help="report only; keep the current defaults")
    a = p.parse_args(argv)
    try:
        cases = masked_cases(a.data_dir, "val", a.n, *shipped_split(), sample_seed=0)
        classifier, counterpart = load_with_counterpart(a.model)
        result = search(with_batch_runtime(classifier), counterpart, cases, "val", a.model,
                        progress=lambda m, s: print(f"{m} {s}", file=sys.stderr), methods=a.methods.split(","))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=1))
    if not a.no_record:
        record(result, "python -m core.explain.search " + " ".join(argv if argv is not None else sys.argv[1:]))
    for method, r in result["results"].items():
        verdict = "" if r["passed"] else " (no setting passed the randomised-weights check)"
        sanity = r["sanity"]
        print(f"\n{method}: chosen {r['chosen']}{verdict}; rank correlation with randomised weights "
              f"{sanity['randomized_weights_rank_corr']:+.2f}, with another class {sanity['other_class_rank_corr']:+.2f}")
        for row in r["candidates"]:
            print(f"  {json.dumps(row['settings'])}: energy ratio {row['energy_ratio']:.2f}, pointing "
                  f"{row['pointing_game']:.2f}, ROAD {row['faithfulness']:+.3f}, {row['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
