"""An exclusive inter-process lock on a file (fcntl), for promotion and the one-job-at-a-time rule."""

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path):
    """Hold an exclusive lock on `path` (created if needed) for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
