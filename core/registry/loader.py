"""`load_model(name_or_path)`: shipped models by name from weights/, or any checkpoint path.

Each format has a loader in `LOADERS` keyed by file suffix. Shipped files are checked against the
sha256 in weights/manifest.json; a mismatch or damage falls back to the previous good version in
weights/previous/ (kept by promotion) and says so in `Classifier.warnings`.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.evaluation.inference import Outputs, model_outputs
from core.evaluation.ood import FeatureDistance
from core.models.checkpoint import CheckpointError, load_checkpoint, sha256_file
from core.models.config import ModelConfig
from core.models.fusion import LogitsOnly
from core.paths import cache_dir, weights_dir
from core.quantization.onnx_export import cached_fp32_export, ort_session, read_metadata
from core.registry.site_calibration import active_site, apply_site, site_summary

log = logging.getLogger(__name__)

SHIPPED = ("teacher", "student", "quantized")
# The teacher's own feature test missed a retinal fundus photo and a histology slide that the student's caught
# (docs/safety.md): its inputs are screened by the student's test as well.
GATES = {"teacher": "student"}
SHIPPED_FILES = {"teacher": "teacher.pt", "student": "student.pt", "quantized": "quantized.onnx"}


def _run_session(session, x: torch.Tensor, outputs: int = 1):
    """The first `outputs` outputs of an ONNX Runtime session (a tensor when 1, else a tuple)."""
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}  # no copy
    names = [o.name for o in session.get_outputs()][:outputs]
    results = tuple(torch.from_numpy(r) for r in session.run(names, feed))
    return results[0] if outputs == 1 else results


@dataclass
class Classifier:
    """A loaded model behind one interface: `logits(x)` on a normalised NCHW float tensor.

    `module` is the torch module (LogitsOnly) for gradient methods; for the int8 ONNX model it is
    None and `float_counterpart` names the fp32 model it was quantized from.
    """

    name: str
    config: ModelConfig
    meta: dict
    path: Path
    sha256: str
    module: torch.nn.Module = None
    session: object = None
    float_counterpart: str = None
    warnings: list = field(default_factory=list)
    batch_session: object = None  # ONNX Runtime twin of a torch model, for batched explanation passes
    origin: dict = field(default_factory=dict)  # shipped models: date and source from the manifest
    gate: "Classifier" = None  # a second model whose feature-distance test also screens this one's inputs

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is not None:
            with torch.inference_mode():
                return self.module(x)
        return _run_session(self.session, x)

    def batch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the hundreds of perturbed inputs of LIME and Score-CAM: through the fastest
        runtime attached (`with_batch_runtime`), else as `logits`. Predictions keep using `logits`."""
        return self.logits(x) if self.batch_session is None else _run_session(self.batch_session, x)

    def outputs(self, x: torch.Tensor):
        """(logits, fused feature) of a normalised batch; the feature is None for an old single-output file."""
        if self.module is not None:
            with torch.inference_mode():
                return self.module.model.logits_and_features(x)
        if len(self.session.get_outputs()) < 2:
            return self.logits(x)
        return _run_session(self.session, x, outputs=2)

    def predict_outputs(self, x: torch.Tensor, tta: bool = False) -> Outputs:
        """Outputs for prediction, probabilities averaged over the 8 dihedral views when `tta` (callers take the
        mode from `core.evaluation.inference.calibration_for`, which knows the validation-chosen default)."""
        return model_outputs(self.outputs, x, tta)

    @property
    def feature_distance(self):
        """The model's fitted out-of-distribution test (core.evaluation.ood), or None for a file without one."""
        if "_feature_distance" not in self.__dict__:
            ood = self.meta.get("ood")
            self.__dict__["_feature_distance"] = FeatureDistance(ood) if ood else None
        return self.__dict__["_feature_distance"]

    @property
    def identity(self) -> dict:
        """Which model answers: name, file sha256 (short), date, where it came from, and the site calibration
        in force (empty: the validation calibration)."""
        site = active_site(self.sha256)
        return {"name": self.name, "sha256": self.sha256[:12], "date": self.origin.get("date", ""),
                "source": self.origin.get("source", f"checkpoint file {self.path.name}"),
                "demo": bool(self.meta.get("demo")), "site_calibration": site_summary(site) if site else ""}

    @property
    def calibration(self) -> dict:
        """What the file's validation fit says about answers, with the active site calibration applied."""
        stored = self.meta.get("calibration", {})
        site = active_site(self.sha256)
        return apply_site(stored, site) if site else stored

    @property
    def params(self) -> int:
        return int(self.meta.get("params", 0))


def _load_torch(path: Path, name: str) -> Classifier:
    model, config, meta = load_checkpoint(path)
    return Classifier(name, config, meta, path, sha256_file(path), module=LogitsOnly(model).eval())


def _load_onnx(path: Path, name: str) -> Classifier:
    try:
        config, meta = read_metadata(path)
        session = ort_session(path)
    except Exception as exc:  # damaged protobuf, missing metadata
        raise CheckpointError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from None
    return Classifier(name, config, meta, Path(path), sha256_file(path), session=session,
                      float_counterpart=meta.get("float_counterpart", "student"))


LOADERS = {".pt": _load_torch, ".onnx": _load_onnx}


def read_manifest(root=None) -> dict:
    path = Path(root or weights_dir()) / "manifest.json"
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text())


def shipped_split(root=None) -> tuple:
    """(seed, fingerprint) of the split the shipped models were trained on (seed 42, unchecked, without a manifest)."""
    entry = read_manifest(root).get("models", {}).get("student", {})
    return int(entry.get("seed", 42)), entry.get("split_fingerprint")


def shipped_path(name: str, root=None) -> Path:
    root = Path(root or weights_dir())
    entry = read_manifest(root).get("models", {}).get(name, {})
    return root / entry.get("file", SHIPPED_FILES[name])


def _load_file(path: Path, name: str, expected_sha=None) -> Classifier:
    loader = LOADERS.get(path.suffix)
    if loader is None:
        raise CheckpointError(f"{path}: unknown weight format {path.suffix!r} (known: {', '.join(LOADERS)})")
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if expected_sha:
        actual = sha256_file(path)
        if actual != expected_sha:
            raise CheckpointError(f"{path} is damaged or was modified: sha256 {actual[:12]}..., "
                                  f"manifest expects {expected_sha}")
    return loader(path, name)


def with_batch_runtime(classifier: Classifier) -> Classifier:
    """Attach an ONNX Runtime fp32 twin to a torch classifier (exported once per checkpoint into the
    cache folder); int8 ONNX classifiers already run in ONNX Runtime."""
    if classifier.module is not None and classifier.batch_session is None:
        classifier.batch_session = ort_session(onnx_twin_path(classifier))
    return classifier


def onnx_twin_path(classifier: Classifier) -> Path:
    """The fp32 ONNX export of a torch classifier (with its parameter count), made once per checkpoint in the
    cache folder."""
    return cached_fp32_export(classifier.module.model, classifier.config, classifier.sha256, cache_dir() / "onnx",
                              meta={"params": classifier.params})


def load_with_counterpart(name_or_path):
    """(classifier, its fp32 counterpart for gradient methods, or None when it is itself a torch model)."""
    classifier = load_model(name_or_path)
    counterpart = load_model(classifier.float_counterpart) if classifier.module is None else None
    return classifier, counterpart


def load_model(name_or_path, root=None) -> Classifier:
    """A shipped model by name (teacher, student, quantized) or a checkpoint path (.pt / .onnx)."""
    if str(name_or_path) not in SHIPPED:
        path = Path(name_or_path)
        return _load_file(path, path.stem)
    name = str(name_or_path)
    root = Path(root or weights_dir())
    manifest = read_manifest(root).get("models", {}).get(name, {})
    path = shipped_path(name, root)
    try:
        classifier = _load_file(path, name, manifest.get("sha256"))
        classifier.origin = {"date": manifest.get("date", ""), "source": manifest.get("source", "release")}
    except CheckpointError as exc:
        previous = root / "previous" / path.name
        if not previous.is_file():
            raise
        prev_manifest = read_manifest(root / "previous").get("models", {}).get(name, {})
        classifier = _load_file(previous, name, prev_manifest.get("sha256"))
        classifier.origin = {"date": prev_manifest.get("date", ""),
                             "source": f"previous version ({prev_manifest.get('source', 'release')})"}
        classifier.warnings.append(f"{exc}. Using the previous good version instead.")
        log.warning("falling back to %s: %s", previous, exc)
    if name in GATES:
        classifier.gate = load_model(GATES[name], root)
    return classifier
