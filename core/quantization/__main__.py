"""CLI: int8-quantize a student checkpoint with ONNX Runtime static QDQ quantization.

`python -m core.quantize --student runs/mskd_lf/best.pt --split runs/mskd_lf/split.json --data-dir DIR --out weights/quantized.onnx`
"""

import argparse
import json
import logging
import sys

from core.data.ham10000 import DatasetError, load_ham10000
from core.data.split import load_split
from core.models.checkpoint import CheckpointError
from core.paths import resolve_data_dir
from core.registry.int8 import CALIBRATION_IMAGES, build_quantized


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m core.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="fp32 student checkpoint (.pt)")
    p.add_argument("--split", required=True, help="split.json of the student's run (calibrates on its train split)")
    p.add_argument("--data-dir")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        records = load_ham10000(resolve_data_dir(a.data_dir))
        calibration = build_quantized(a.student, load_split(a.split), records, a.out, a.calibration_images)
    except (DatasetError, CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": a.out, "calibration": calibration}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
