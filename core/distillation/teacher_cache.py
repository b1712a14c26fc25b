"""The frozen teacher's outputs per training batch, kept on disk and shared by distillation stages.

With the same seed, batch size, sampling and augmentation every student stage (kd, mskd, mskd_lf)
draws exactly the same batches, and the frozen teacher in eval mode gives exactly the same outputs
on them; computing them once saves a teacher forward pass per batch in every later stage. Each
entry stores the batch's sample indices and is used only when they match; the key includes the
digest of the preprocessing and augmentation code, so changed code never reuses stale targets.
"""

import hashlib
import json
import os
from pathlib import Path

import torch

from core.models.fusion import HybridOutput


class TeacherOutputCache:
    def __init__(self, root, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / "teacher_outputs" / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
        self.hits = self.misses = 0

    def _path(self, epoch: int, batch: int) -> Path:
        return self.dir / f"e{epoch:03d}_b{batch:05d}.pt"

    def get(self, epoch: int, batch: int, idx, device="cpu") -> HybridOutput:
        """The stored outputs for this batch on `device`, or None when absent or stored for other samples."""
        path = self._path(epoch, batch)
        if path.is_file():
            try:
                entry = torch.load(path, map_location=device, weights_only=True)
            except Exception:  # a half-written or damaged entry is recomputed
                entry = None
            if entry is not None and torch.equal(entry["idx"].cpu(), torch.as_tensor(idx)):
                self.hits += 1
                return HybridOutput(entry["logits"], entry["exit_logits"], entry["stage_features"],
                                    entry["fused_feature"], entry["fusion_weights"])
        self.misses += 1
        return None

    def put(self, epoch: int, batch: int, idx, out: HybridOutput) -> None:
        entry = {"idx": torch.as_tensor(idx), "logits": out.logits, "exit_logits": list(out.exit_logits),
                 "stage_features": list(out.stage_features), "fused_feature": out.fused_feature,
                 "fusion_weights": out.fusion_weights}
        path = self._path(epoch, batch)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(entry, tmp)
        os.replace(tmp, path)
