"""JSON tables beside the weights (explanation settings, site calibrations): read once per version of the file,
replaced atomically."""

import functools
import json
import os
from pathlib import Path


def read_json(path) -> dict:
    """The parsed file ({} when absent), cached per (mtime, size): pages ask for it on every rerun. Shared between
    callers: copy before changing it."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> dict:
    return json.loads(Path(path).read_text())


def write_json(path, table: dict) -> None:
    """Replace the file atomically: a reader sees the old table or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, path)
