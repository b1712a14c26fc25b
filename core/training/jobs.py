"""Background training jobs for the app: one at a time, as `python -m core.train` subprocesses.

State lives on disk (runs/<name>/progress.json, metrics.jsonl, train.log, runs/active_job.json),
so a page reload or browser restart finds the job again. Cancel sends SIGTERM; the trainer stops
at the next batch boundary and keeps its last good checkpoint.
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from core.data.ham10000 import load_ham10000
from core.filelock import exclusive_lock
from core.paths import PROJECT_ROOT, resolve_data_dir
from core.training.config import TrainConfig

ACTIVE = "active_job.json"


class JobError(RuntimeError):
    """A job cannot be started or controlled; the message says why."""


def runs_root() -> Path:
    return Path(os.environ.get("DERMADISTILL_RUNS", PROJECT_ROOT / "runs"))


def _alive(job: dict) -> bool:
    """Is the job's process still the one we started (same pid and creation time) and not a zombie? A pid
    reused by an unrelated process after a restart is not the job."""
    pid = int(job["pid"])
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap our own finished child (else it lingers as a zombie)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        proc = psutil.Process(pid)
        same = job.get("create_time") is None or abs(proc.create_time() - float(job["create_time"])) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def writer_alive(progress: dict) -> bool:
    """Is the process that writes a run's progress.json (its pid and start time) still running? A run started
    from the command line has no job record of the app's; a pid reused by a process created after the run
    started is not the run."""
    try:
        proc = psutil.Process(int(progress["pid"]))
        return proc.create_time() <= float(progress["started"]) + 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (KeyError, TypeError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def active_job(root=None):
    """{"pid", "run", "started", "stage"} of the running job, or None (stale records are cleared)."""
    root = Path(root or runs_root())
    path = root / ACTIVE
    if not path.is_file():
        return None
    try:
        job = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if _alive(job):
        return job
    path.unlink(missing_ok=True)
    return None


def check_data(cfg: TrainConfig, processes: int = 1) -> None:
    """Refuse before any work: bad parameters, missing folder/metadata/images, unknown labels."""
    cfg.validate(world_size=processes)
    load_ham10000(resolve_data_dir(cfg.data_dir))  # raises DatasetError listing every problem


def training_argv(cfg: TrainConfig, processes: int = 1) -> list:
    """The command of a job: `python -m core.train ...`, or the same under torchrun for several processes."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, "-m", "core.train", *cfg.to_argv()]


def start_job(cfg: TrainConfig, root=None, processes: int = 1) -> dict:
    """Launch training in the background (with torchrun when processes > 1); refuses while another job runs."""
    if not 1 <= processes <= (os.cpu_count() or 1):
        raise JobError(f"processes must be between 1 and {os.cpu_count() or 1} (the cores of this machine)")
    root = Path(root or runs_root())
    check_data(cfg, processes)
    with exclusive_lock(root / ".jobs.lock"):
        running = active_job(root)
        if running:
            raise JobError(f"a training job is already running: {Path(running['run']).name} "
                           f"(stage {running['stage']}, pid {running['pid']}, started {running['started']})")
        name = f"{cfg.stage}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        run_dir = root / name
        if run_dir.exists():
            raise JobError(f"run folder {run_dir} already exists; try again in a second")
        run_dir.mkdir(parents=True)
        (run_dir / "progress.json").write_text(json.dumps({"state": "starting"}))
        cfg.out = str(run_dir)
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        with open(run_dir / "train.log", "ab") as log:
            argv = training_argv(cfg, processes)
            proc = subprocess.Popen(argv, cwd=PROJECT_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        job = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "run": str(run_dir),
               "stage": cfg.stage, "processes": processes,
               "command": " ".join(["python", *argv[1:]]),
               "started": dt.datetime.now().isoformat(timespec="seconds")}
        tmp = root / f".{ACTIVE}.tmp"
        tmp.write_text(json.dumps(job))
        os.replace(tmp, root / ACTIVE)
    return job


def cancel_job(root=None) -> bool:
    """SIGTERM the running job's process group (the launcher and every rank stop cleanly at the next batch).
    False when nothing runs; `active_job` has checked the process identity, so no unrelated group is hit."""
    job = active_job(root)
    if not job:
        return False
    try:
        os.killpg(int(job["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def run_status(run_dir) -> dict:
    """Everything the Train page shows about a run, read from its folder."""
    run_dir = Path(run_dir)
    metrics = []
    if (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
    log_tail = ""
    if (run_dir / "train.log").is_file():
        log_tail = "\n".join((run_dir / "train.log").read_text(errors="replace").splitlines()[-15:])
    return {"name": run_dir.name, "path": str(run_dir), "progress": _read_json(run_dir / "progress.json", {}),
            "config": _read_json(run_dir / "config.json", {}), "metrics": metrics,
            "report": _read_json(run_dir / "report.json"), "log_tail": log_tail}


def list_runs(root=None) -> list:
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    return [run_status(p) for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


def eta_seconds(progress: dict):
    """Remaining seconds from the current epoch's pace, or None before the first batch."""
    if progress.get("state") != "training" or not progress.get("batch"):
        return None
    per_batch = progress["seconds"] / progress["batch"]
    remaining = (progress["epochs"] - progress["epoch"]) * progress["batches"] + progress["batches"] - progress["batch"]
    return per_batch * remaining

