"""Decoded-image cache: one uint8 array (N x S x S x 3) per image size, built once and memory-mapped.

Decoding 10k JPEGs per epoch would dominate training on 2 cores; the cache is built through the
same `load_image` + `resize_uint8` path the app uses, so train and inference pixels agree.
"""

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from core.data import preprocess
from core.data.preprocess import load_image, resize_uint8
from core.paths import cache_dir

log = logging.getLogger(__name__)


def code_digest(*modules) -> str:
    """Short digest of modules' source files: part of every cache key whose contents that code determines,
    so changed preprocessing or augmentation code never reuses stale arrays."""
    h = hashlib.sha256()
    for module in modules:
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


def _cache_path(records, size: int, root: Path) -> Path:
    key = hashlib.sha1("\n".join(f"{r.image_id}:{r.path}" for r in records).encode()
                       + code_digest(preprocess).encode()).hexdigest()[:16]
    return root / f"images_{size}px_{len(records)}_{key}.npy"


def cached_images(records, size: int, root=None, progress=None) -> np.ndarray:
    """uint8 array of all `records` at size x size, from cache when present.

    `progress(done, total)` is called while building. The file is written atomically.
    """
    root = Path(root or cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    path = _cache_path(records, size, root)
    if path.is_file():
        return np.load(path, mmap_mode="r")
    log.info("building image cache %s", path)
    arr = np.empty((len(records), size, size, 3), dtype=np.uint8)
    for i, r in enumerate(records):
        arr[i] = resize_uint8(load_image(r.path), size)
        if progress and (i % 200 == 0 or i == len(records) - 1):
            progress(i + 1, len(records))
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr
