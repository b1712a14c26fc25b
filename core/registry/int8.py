"""Build the int8 model from a student checkpoint: export, quantize on training images, re-calibrate.

`python -m core.quantize` and promotion both call `build_quantized`. The int8 model gets its own
temperature, `uncertain`, referral and feature-distance thresholds fitted on the validation split,
since quantization moves logits and features.
"""

import tempfile
from pathlib import Path

import numpy as np

from core.data.cache import cached_images
from core.data.split import split_indices
from core.evaluation.inference import fit_model_calibration
from core.models.checkpoint import load_checkpoint, sha256_file
from core.quantization.onnx_export import export_onnx, quantize_int8, set_metadata
from core.registry.loader import load_model

CALIBRATION_IMAGES = 512


def quantize_command(run_dir, data_dir) -> str:
    """The `python -m core.quantize` command that rebuilds a run's int8 model."""
    run_dir = Path(run_dir)
    return (f"python -m core.quantize --student {run_dir / 'best.pt'} --split {run_dir / 'split.json'} "
            f"--data-dir {data_dir} --out weights/quantized.onnx")


def package_versions() -> dict:
    """The exporter's and quantizer's versions: the same recipe gave int8 models 9 points apart in validation
    balanced accuracy under two sets of these (docs/results.md), so each file records its own."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "onnx", "onnxscript", "onnxruntime")}


def build_quantized(student_ckpt, split: dict, records, out_path, n_calibration: int = CALIBRATION_IMAGES,
                    seed: int = 0) -> dict:
    """Write the int8 ONNX model to out_path; returns its calibration dict. `records`: the data set."""
    model, config, meta = load_checkpoint(student_ckpt)
    part = split_indices(records, split)
    images = cached_images(records, config.img_size)
    labels = np.array([r.label for r in records])
    train_idx = part["train"]
    rng = np.random.default_rng(seed)
    calib_idx = np.sort(rng.choice(train_idx, size=min(n_calibration, len(train_idx)), replace=False))
    qmeta = {**{k: v for k, v in meta.items() if k not in ("calibration", "ood", "test", "val")},
             "float_counterpart": "student", "float_sha256": sha256_file(student_ckpt),
             "quantization": {"method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, "
                                        "MinMax calibration", "calibration_images": int(len(calib_idx)),
                              "calibration_split": "train", "packages": package_versions()}}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx", qmeta)
        quantize_int8(fp32, out_path, images[calib_idx], config, qmeta)
    classifier = load_model(out_path)
    fitted = fit_model_calibration(classifier.outputs, config, images, labels, part)
    set_metadata(out_path, config, {**qmeta, **fitted})
    return fitted["calibration"]
