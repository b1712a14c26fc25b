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


def resolve_external_dir(external_dir=None) -> Path:
    """The external validation set (labels.csv + images/): explicit argument, else $DERMADISTILL_EXTERNAL_DIR,
    else ../shared/data/isic2018_external_val beside the checkout. For choices and reports, never for training."""
    if external_dir:
        return Path(external_dir)
    env = os.environ.get("DERMADISTILL_EXTERNAL_DIR")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "isic2018_external_val"


def weights_dir() -> Path:
    """The active-models folder (override with DERMADISTILL_WEIGHTS for tests and deployments)."""
    return Path(os.environ.get("DERMADISTILL_WEIGHTS", PROJECT_ROOT / "weights"))


def cache_dir() -> Path:
    """Decoded-image caches (uint8 arrays), kept out of git."""
    return Path(os.environ.get("DERMADISTILL_CACHE", PROJECT_ROOT / ".cache"))
