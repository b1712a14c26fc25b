"""int8 variants of the shipped student on the validation split (docs/results.md, "int8"): ONNX Runtime static QDQ
quantization with different op sets and calibration methods, scored by validation balanced accuracy (plain view).

  HAM10000_DIR=../shared/data/ham10000 python docs/experiments/int8_variants.py
"""
import json
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path
from core.data.ham10000 import load_ham10000
from core.data.split import recompute_split, split_indices
from core.data.cache import cached_images
from core.models.checkpoint import load_checkpoint
from core.quantization import onnx_export as ox
from core.registry.loader import load_model
from core.evaluation.inference import batched_outputs
from core.evaluation.metrics import classification_metrics
from core.evaluation.calibration import softmax_np
from core.paths import resolve_data_dir, weights_dir  # noqa: E402
records = load_ham10000(resolve_data_dir(None))
m = json.load(open(weights_dir() / "manifest.json"))
split = recompute_split(records, 42, m["test_split"]["fingerprint"])
part = split_indices(records, split)
model, config, meta = load_checkpoint(weights_dir() / "student.pt")
images = cached_images(records, 128)
labels = np.array([r.label for r in records])
rng = np.random.default_rng(0)
calib = images[np.sort(rng.choice(part["train"], 512, replace=False))]
val = part["val"]
tmp = Path(tempfile.mkdtemp(prefix="int8-variants-"))
fp32 = ox.export_onnx(model, config, tmp / "fp32.onnx", {})
def score(path):
    c = load_model(path)
    out = batched_outputs(c.outputs, images[val], config)
    return round(classification_metrics(labels[val], softmax_np(out.logits))["balanced_accuracy"], 4)
print("fp32 onnx", score(fp32), flush=True)
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
prepped = tmp / "prepped.onnx"
quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
import onnx
name = onnx.load(str(prepped)).graph.input[0].name
variants = {
    "all_minmax": dict(),  # the shipped build
    "all_minmax_noadj": dict(extra_options={"QDQDisableWeightAdjustForInt32Bias": True}),
    "trunk_ops_minmax": dict(op_types_to_quantize=["Conv", "Add", "Clip", "Relu", "ReduceMean", "Concat"]),
    "all_percentile": dict(calibrate_method=CalibrationMethod.Percentile),
    "conv_minmax": dict(op_types_to_quantize=["Conv"]),
    "conv_percentile": dict(op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.Percentile),
    "conv_entropy": dict(op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.Entropy),
}
for v, kw in variants.items():
    kw = {"calibrate_method": CalibrationMethod.MinMax, **kw}
    out = tmp / f"{v}.onnx"
    t = time.time()
    quantize_static(str(prepped), str(out), ox.ImageCalibrationReader(calib, config, name), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **kw)
    ox.set_metadata(out, config, {})
    print(v, score(out), out.stat().st_size, f"{time.time()-t:.0f}s", flush=True)
