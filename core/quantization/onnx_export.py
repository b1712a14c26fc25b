"""ONNX export of a checkpoint and int8 post-training static quantization with ONNX Runtime (QDQ).

Pipeline: fp32 ONNX (torch.onnx dynamo exporter) -> `quant_pre_process` (shape inference and ORT
graph optimisation, which folds every Conv+BatchNormalization; checked, not assumed) -> static
QDQ quantization, per-channel int8 weights and uint8 activations (the U8S8 pair that VNNI/AMX
kernels take), calibrated on training-split images. The model config and metadata travel in the
ONNX file's metadata_props, so the .onnx file is self-describing like a .pt checkpoint.
"""

import copy
import json
import logging
import os
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np
import onnx
import torch

from core.data.preprocess import to_model_tensor
from core.models.config import ModelConfig
from core.models.fusion import LogitsAndFeatures

log = logging.getLogger(__name__)


def export_onnx(model, config: ModelConfig, path, meta=None) -> Path:
    """fp32 ONNX of model.logits_and_features (outputs `logits` and `features`) with a dynamic batch axis;
    config + meta in metadata_props."""
    path = Path(path)
    wrapper = LogitsAndFeatures(model).eval()
    example = torch.randn(2, 3, config.img_size, config.img_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(wrapper, (example,), dynamo=True, external_data=False,
                                input_names=["image"], output_names=["logits", "features"],
                                dynamic_shapes={"x": {0: batch}}, optimize=True)
    program.save(str(path))
    set_metadata(path, config, meta or {})
    return path


def set_metadata(path, config: ModelConfig, meta: dict) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in (("dermadistill_config", config.to_dict()), ("dermadistill_meta", meta)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def read_metadata(path):
    """(ModelConfig, meta dict) stored in an ONNX file by `set_metadata`."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "dermadistill_config" not in props:
        raise ValueError(f"{path} has no DermaDistill config in its metadata")
    return ModelConfig.from_dict(json.loads(props["dermadistill_config"])), json.loads(props.get("dermadistill_meta", "{}"))


def compact_names(path) -> None:
    """Shorten tensor names and drop node names, doc strings and per-node metadata: the exporter's
    module paths and stack traces are a large share of a small int8 file. Graph I/O keep their names."""
    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping = {}

    def short(name):
        if not name or name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        del node.metadata_props[:]  # the exporter's per-node stack traces
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def op_counts(path) -> dict:
    counts = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class ImageCalibrationReader:
    """Feeds normalised training images to the ORT calibrator, a batch at a time."""

    def __init__(self, images_uint8, config: ModelConfig, input_name: str, batch_size: int = 32):
        self.images, self.config, self.input_name, self.batch_size = images_uint8, config, input_name, batch_size
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.images):
            return None
        chunk = torch.from_numpy(np.ascontiguousarray(self.images[self.pos:self.pos + self.batch_size]))
        self.pos += self.batch_size
        return {self.input_name: to_model_tensor(chunk, self.config).numpy()}

    def rewind(self):
        self.pos = 0


def quantize_int8(fp32_path, out_path, calibration_images, config: ModelConfig, meta=None) -> Path:
    """Static int8 QDQ quantization of an fp32 ONNX model; returns out_path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        remaining_bn = op_counts(prepped).get("BatchNormalization", 0)
        if remaining_bn:
            raise RuntimeError(f"{remaining_bn} BatchNormalization node(s) not folded into convolutions")
        input_name = onnx.load(str(prepped)).graph.input[0].name
        reader = ImageCalibrationReader(calibration_images, config, input_name)
        quantize_static(str(prepped), str(out_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    compact_names(out_path)
    set_metadata(out_path, config, meta or {})
    return Path(out_path)


def executed_op_types(path, img_size: int, threads: int = 2) -> dict:
    """{op type: count} of the kernels ONNX Runtime actually ran for one batch-1 inference (from its
    profiler), so that int8 use is measured: a QDQ model whose convolutions run as QLinearConv is
    using the integer kernels; float Conv nodes left in it are not."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.zeros((1, 3, img_size, img_size), dtype=np.float32)
        session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    counts = {}
    for event in events:
        op = event.get("args", {}).get("op_name")
        if event.get("cat") == "Node" and op and event.get("name", "").endswith("_kernel_time"):
            counts[op] = counts.get(op, 0) + 1
    return counts


def ort_session(path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_EXPORT_LOCK = threading.Lock()


def cached_fp32_export(model, config: ModelConfig, sha256: str, root, meta=None) -> Path:
    """fp32 ONNX twin of a checkpoint (identified by its sha256, `meta` stored in it), exported once into `root`
    and reused. One export at a time per process, from a copy of the model (it may be serving predictions
    meanwhile)."""
    path = Path(root) / f"{sha256[:32]}.onnx"
    with _EXPORT_LOCK:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}.onnx")
            export_onnx(copy.deepcopy(model).eval(), config, tmp, meta)
            os.replace(tmp, path)
    return path
