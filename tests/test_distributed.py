"""torchrun + DDP on CPU (gloo), on the tiny fixture: one set of run files, equivalence with one process,
sharding, resume across world sizes and a clean stop on SIGTERM."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core.models.checkpoint import load_checkpoint, read_checkpoint
from core.training.distributed import DistributedContext, local_slice, wants_synchronised_batchnorm
from tests.conftest import FIXTURE, ROOT, TINY_SIZE, train_tiny

# dropout and stochastic depth off, so that two runs can be compared step by step
COMMON = ["--data-dir", str(FIXTURE), "--img-size", str(TINY_SIZE), "--drop-rate", "0", "--drop-path-rate", "0",
          "--ema-decay", "0"]


def torchrun(args, nproc=2, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "core.train", *args]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **popen)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train_tiny("teacher", out)
    return out / "best.pt"


def test_two_process_distillation_writes_one_set_of_files_and_resumes_on_one(teacher, tmp_path):
    run = tmp_path / "run"
    result = torchrun(["--stage", "mskd_lf", "--teacher", str(teacher), *COMMON, "--epochs", "1",
                       "--batch-size", "4", "--out", str(run)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # written by rank 0 only
    assert result.stdout.count('"split": "test"') == 1  # one final report
    _, _, meta = load_checkpoint(run / "best.pt")
    assert meta["world_size"] == 2 and meta["backend"] == "gloo" and meta["device"] == "cpu"
    # --resume with another world size continues the same run
    train_tiny("mskd_lf", run, teacher=teacher, epochs=2, resume=True, drop_rate=0, drop_path_rate=0, ema_decay=0)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("stage", ["student", "mskd_lf"])
def test_first_step_matches_one_process(teacher, tmp_path, stage):
    """Same global batch and seed: the first step's gradients (Adam's first moment) of a 2-process run equal
    the single-process ones within float tolerance; the trainer checks after every step that ranks agree."""
    args = ["--stage", stage, "--teacher", str(teacher), *COMMON, "--epochs", "1", "--batch-size", "24",
            "--sync-batchnorm", "on"]
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "core.train", *args, "--threads", "1", "--out", str(one)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    assert single.returncode == 0, single.stderr[-3000:]
    result = torchrun([*args, "--out", str(two)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((two / "config.json").read_text())["batchnorm_synchronised"]
    a, b = read_checkpoint(one / "last.pt"), read_checkpoint(two / "last.pt")
    steps = {float(state["step"]) for ckpt in (a, b) for state in ckpt["optimizer"]["state"].values()}
    assert steps == {1.0}  # exactly one optimiser step in each run (Adam counts them per parameter)
    num = den = 0.0
    for i, state in a["optimizer"]["state"].items():
        other = b["optimizer"]["state"][i]["exp_avg"]
        num += float(((state["exp_avg"] - other) ** 2).sum())
        den += float((state["exp_avg"] ** 2).sum())
    relative = math.sqrt(num / den)
    print(f"\n{stage}: relative difference of first-step gradients, 2 processes vs 1: {relative:.1e}")
    assert relative < 1e-2
    moved = [float((a["state_dict"][k] - b["state_dict"][k]).abs().max()) for k in a["state_dict"]
             if a["state_dict"][k].is_floating_point()]
    assert max(moved) <= 2.1 * 2e-3  # at most Adam's first-step size (lr) in opposite directions


def test_each_rank_augments_its_share_of_the_same_global_batch():
    """A rank's slice, augmented alone with the global batch's draws, equals that slice of the whole batch
    augmented at once, and leaves the generator where the whole batch would."""
    from core.data.augment import AugmentConfig, augment_batch

    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    whole_gen, share_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = augment_batch(x, AugmentConfig(), whole_gen)
    share = local_slice(np.arange(12), DistributedContext(rank=1, world_size=3))
    assert torch.equal(augment_batch(x[share], AugmentConfig(), share_gen, rows=share, batch_size=12), whole[share])
    assert torch.equal(whole_gen.get_state(), share_gen.get_state())


def test_batchnorm_is_synchronised_where_it_pays():
    """auto: always with CUDA; on CPU only below 16 images per rank and step (gloo's collectives are slow)."""
    cpu, cuda = (DistributedContext(world_size=2, backend=b, device=d) for b, d in (("gloo", "cpu"), ("nccl", "cuda:0")))
    assert not wants_synchronised_batchnorm("auto", cpu, 64)  # 32 images per rank
    assert wants_synchronised_batchnorm("auto", cpu, 24)  # 12 per rank
    assert wants_synchronised_batchnorm("auto", cuda, 64)
    assert wants_synchronised_batchnorm("on", cpu, 64) and not wants_synchronised_batchnorm("off", cuda, 8)
    assert not wants_synchronised_batchnorm("on", DistributedContext(), 64)  # one process: nothing to synchronise


def test_ranks_draw_disjoint_shards_of_the_global_stream():
    rng = np.random.default_rng(0)
    order = rng.integers(0, 500, size=96)  # an epoch of a class-balanced stream (with repeats)
    batch = 12
    for world in (2, 3, 4):
        for b in range(len(order) // batch):
            positions = np.arange(b * batch, (b + 1) * batch)
            shards = [positions[local_slice(positions, DistributedContext(rank=r, world_size=world))]
                      for r in range(world)]
            assert np.array_equal(np.concatenate(shards), positions)  # disjoint, together the global batch
            assert len({len(s) for s in shards}) == 1


def test_sigterm_stops_every_rank_and_keeps_a_loadable_checkpoint(teacher, tmp_path):
    run = tmp_path / "run"
    proc = torchrun(["--stage", "kd", "--teacher", str(teacher), *COMMON, "--epochs", "200", "--batch-size", "4",
                     "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.5)
    assert (run / "metrics.jsonl").is_file(), "no epoch finished"
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and both ranks, as a cancel does
    proc.wait(timeout=120)
    time.sleep(1)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not children, f"orphan processes: {children}"
    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] >= 0 and torch.is_tensor(next(iter(state["state_dict"].values())))
    assert json.loads((run / "progress.json").read_text())["state"] == "cancelled"


def test_sync_batchnorm_conversion_keeps_the_activations():
    """What CUDA + torchrun trains: timm's conversion keeps each BatchNormAct2d's activation (SyncBatchNormAct), so
    the converted student computes the same eval-mode output as before (torch's own conversion dropped them). On
    the CPU, SyncBatchNorm refuses to run at all, so the CPU run compares the converted modules instead."""
    from timm.layers import convert_sync_batchnorm
    from timm.layers.norm_act import BatchNormAct2d, SyncBatchNormAct

    from core.models.factory import DEFAULT_CONFIGS, create_model

    model = create_model(DEFAULT_CONFIGS["student"](TINY_SIZE)).eval()
    acts = {n: type(m.act) for n, m in model.named_modules() if isinstance(m, BatchNormAct2d)}
    assert acts, "the student has no BatchNormAct2d layers"
    converted = convert_sync_batchnorm(model)
    synced = {n: m for n, m in converted.named_modules() if isinstance(m, SyncBatchNormAct)}
    assert set(synced) == set(acts) and all(type(synced[n].act) is acts[n] for n in acts)
    if torch.cuda.is_available():
        x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE, device="cuda")
        with torch.no_grad():
            before = create_model(DEFAULT_CONFIGS["student"](TINY_SIZE))
            before.load_state_dict(converted.state_dict())
            assert torch.allclose(before.cuda().eval()(x).logits, converted.cuda().eval()(x).logits, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CPU case is covered by the trainer tests)")
def test_cached_teacher_outputs_come_back_on_the_requested_device(tmp_path):
    from core.distillation.teacher_cache import TeacherOutputCache
    from core.models.fusion import HybridOutput

    cache = TeacherOutputCache(tmp_path, {"k": 1})
    out = HybridOutput(torch.randn(2, 7), [torch.randn(2, 7)], [torch.randn(2, 4)], torch.randn(2, 4), torch.ones(2))
    cache.put(0, 0, [3, 5], out)
    got = cache.get(0, 0, [3, 5], "cuda")
    assert got.logits.device.type == "cuda" and all(t.device.type == "cuda" for t in got.exit_logits)
