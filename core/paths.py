"""Where things live: the data folder (--data-dir, else $HAM10000_DIR, else data/ham10000) and the weights folder."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path("data/ham10000")


def resolve_data_dir(data_dir=None) -> Path:
    """The HAM10000 folder: explicit argument, else env HAM10000_DIR, else data/ham10000."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("HAM10000_DIR")
    return Path(env) if env else DEFAULT_DATA_DIR


def weights_dir() -> Path:
    """The active-models folder (override with DERMADISTILL_WEIGHTS for tests and deployments)."""
    return Path(os.environ.get("DERMADISTILL_WEIGHTS", PROJECT_ROOT / "weights"))


def cache_dir() -> Path:
    """Decoded-image caches (uint8 arrays), kept out of git."""
    return Path(os.environ.get("DERMADISTILL_CACHE", PROJECT_ROOT / ".cache"))
