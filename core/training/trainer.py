"""The training loop for every stage: cached images, balanced sampling, batch augmentation,
AdamW + warmup/cosine, weight EMA, per-epoch validation, atomic checkpoints, clean stop, resume.

Progress goes to a callback `callback(event, **data)` (events: "cache", "batch", "epoch", "done"),
so the CLI can draw bars and the app can read files; nothing here prints.
"""

import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from core.classes import CLASSES
from core.data import augment as augment_module
from core.data import preprocess as preprocess_module
from core.data.augment import AugmentConfig, augment_batch
from core.data.cache import cached_images, code_digest
from core.data.ham10000 import HAM10000_IMAGES, content_duplicate_groups, load_ham10000
from core.data.preprocess import to_model_tensor
from core.data.split import lesion_grouped_split, load_split, save_split, split_fingerprint, split_indices
from core.distillation.stages import STAGES, FeatureProjector, stage_losses
from core.distillation.teacher_cache import TeacherOutputCache
from core.evaluation.calibration import softmax_np
from core.evaluation.inference import batched_logits, batched_outputs, fit_model_calibration
from core.evaluation.metrics import classification_metrics
from core.evaluation.report import SUMMARY
from core.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, sha256_file
from core.models.factory import DEFAULT_CONFIGS, count_params, create_model
from core.paths import cache_dir, resolve_data_dir
from core.training.config import TrainConfig, TrainConfigError
from core.training.distributed import (DistributedContext, any_rank, assert_replicas_identical, average_gradients,
                                       barrier, close_distributed, ddp_anchor, init_distributed, local_slice,
                                       main_rank_uses_node, mean_over_ranks, synchronised_batchnorm,
                                       wants_synchronised_batchnorm)

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """Raised at a batch boundary when a stop was requested; the last good checkpoint is kept."""


def _noop(event, **data):
    pass


def class_balanced_weights(labels, power: float) -> torch.Tensor:
    """Per-sample sampling weights ~ count(class) ** -power."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    return torch.as_tensor(np.maximum(counts[labels], 1) ** -power, dtype=torch.double)


def teacher_identity(path: Path) -> dict:
    """What a distilled run's config.json records of its teacher: the path, the file's sha256 and its number
    of ensemble members (0: a single network), so that the run's release row never depends on what the path
    holds later."""
    return {"teacher": str(path), "teacher_sha256": sha256_file(path),
            "teacher_members": len(read_checkpoint(path)["meta"].get("members", []))}


def run_training(cfg: TrainConfig, callback=_noop, should_stop=lambda: False) -> dict:
    """Train one stage into cfg.out; returns the test report (also written to report.json).

    Under torchrun every rank calls this; only rank 0 reports progress, writes files and returns the
    report (the others return None). See core.training.distributed.
    """
    cfg.validate()
    ctx = init_distributed(cfg.device)
    try:
        with ExitStack() as stack:
            return _train(cfg, ctx, callback if ctx.is_main else _noop, should_stop, stack)
    finally:
        close_distributed(ctx)


def _train(cfg: TrainConfig, ctx: DistributedContext, callback, should_stop, stack: ExitStack):
    stage = STAGES[cfg.stage]
    device = torch.device(ctx.device)
    on_cuda = device.type == "cuda"
    data_dir = resolve_data_dir(cfg.data_dir)
    teacher_path = Path(cfg.teacher or "") if stage.needs_teacher else None
    if teacher_path is not None and not teacher_path.is_file():
        raise TrainConfigError(f"stage {cfg.stage} needs a teacher checkpoint; not found: {teacher_path}")
    records = load_ham10000(data_dir)
    if cfg.limit:
        records = records[: cfg.limit]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if threads := cfg.threads or (ctx.distributed and max(1, (os.cpu_count() or 1) // ctx.local_world_size)):
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.init_seed)

    split_path = out / "split.json"
    if cfg.resume and split_path.is_file():
        split = load_split(split_path)
    else:  # deterministic: every rank computes the same split, rank 0 writes it
        split = lesion_grouped_split(records, seed=cfg.seed, duplicate_of=content_duplicate_groups(records))
        if ctx.is_main:
            save_split(split, split_path)
    sync_bn = wants_synchronised_batchnorm(cfg.sync_batchnorm, ctx, cfg.batch_size)
    launch = {**ctx.describe(), "batchnorm_synchronised": sync_bn}
    teacher_record = teacher_identity(teacher_path) if teacher_path else {"teacher": None}
    if ctx.is_main:
        (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data_dir), **launch,
                                                     **teacher_record}, indent=2))

    images = cached_images(records, cfg.img_size, progress=lambda d, t: callback("cache", done=d, total=t))
    labels = np.array([r.label for r in records])
    part = split_indices(records, split)

    model_config = DEFAULT_CONFIGS[stage.role](cfg.img_size)
    if cfg.drop_rate is not None:  # regularisation overrides (0 and 0 make runs comparable step by step)
        model_config.drop_rate = cfg.drop_rate
    if cfg.drop_path_rate is not None:
        model_config.arch_kwargs["drop_path_rate"] = cfg.drop_path_rate
    model_config.colour_constancy = cfg.colour_constancy
    if cfg.trunk:  # an ensemble member on another ImageNet trunk
        model_config.arch_kwargs["effnet_arch"] = cfg.trunk
    model = create_model(model_config)
    if cfg.pretrained:
        model_config.pretrained = model.load_pretrained()
    model = stack.enter_context(synchronised_batchnorm(model, ctx, sync_bn)).to(device)
    teacher = projector = teacher_images = teacher_cache = None
    if stage.needs_teacher:
        teacher, teacher_config, _ = load_checkpoint(teacher_path)
        teacher.requires_grad_(False).eval().to(device)  # replicated on every rank, frozen
        # the teacher sees its own input size, cut from the same augmented view as the student's
        teacher_images = (images if teacher_config.img_size == cfg.img_size else
                          cached_images(records, teacher_config.img_size,
                                        progress=lambda d, t: callback("cache", done=d, total=t)))
    if stage.feature_kd:
        projector = FeatureProjector(model.stage_dims + [model_config.fusion_dim],
                                     teacher.stage_dims + [teacher_config.fusion_dim]).to(device)
    params = list(model.parameters()) + (list(projector.parameters()) if projector else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(part["train"]) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    # linear warm-up from lr/warmup_steps, then cosine down to 2% of lr, per optimizer step (timm's scheduler)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=0.02 * cfg.lr,
                                  warmup_t=warmup_steps, warmup_lr_init=cfg.lr / max(1, warmup_steps),
                                  warmup_prefix=True, t_in_epochs=False)
    # EMA of the parameters with timm's warm-up (decay grows with the step), BatchNorm statistics copied
    # from the live model: averaging running statistics of changing weights breaks BN models in eval mode.
    ema = (ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, exclude_buffers=True)
           if cfg.ema_decay > 0 else None)
    sample_weights = class_balanced_weights(labels[part["train"]], cfg.balance_power)
    generator = torch.Generator().manual_seed(cfg.init_seed)
    augment_cfg = AugmentConfig()

    if teacher is not None:
        teacher_cache = TeacherOutputCache(cache_dir(), {
            "teacher_sha256": teacher_record["teacher_sha256"], "seed": cfg.init_seed, "batch_size": cfg.batch_size,
            "balance_power": cfg.balance_power, "img_size": cfg.img_size, "limit": cfg.limit,
            "split": split_fingerprint(split), "augment": asdict(augment_cfg), "mean": model_config.mean,
            "std": model_config.std, "code": code_digest(preprocess_module, augment_module),
            **({"world_size": ctx.world_size, "rank": ctx.rank} if ctx.distributed else {})})
    # the student in DDP; the small feature projector's gradients are averaged by hand
    train_model = DistributedDataParallel(model) if ctx.distributed else model

    start_epoch, best_score = 0, -1.0  # best_score: validation score of the epoch best.pt holds
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume and last_path.is_file():
        state = read_checkpoint(last_path)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
        if projector is not None and "projector" in state:
            projector.load_state_dict(state["projector"])
        generator.set_state(state["generator"])
        start_epoch, best_score = state["epoch"] + 1, state["best_score"]
        log.info("resumed from %s at epoch %d", last_path, start_epoch)

    fingerprint = split_fingerprint(split)
    meta_base = {"stage": cfg.stage, "seed": cfg.seed, "split_fingerprint": fingerprint,
                 "params": count_params(model), "train_config": cfg.to_dict(), **launch}
    val_images, val_labels = images[part["val"]], labels[part["val"]]  # gathered once, scored every epoch

    def validate():
        """(weights name, model, val metrics) of the better of the live and the EMA weights on validation."""
        candidates = {"live": model, **({"ema": ema.module} if ema is not None else {})}
        scored = []
        for name, m in candidates.items():
            m.eval()
            logits = batched_logits(lambda x: m.predict(x.to(device)).float().cpu(), val_images, model_config)
            scored.append((name, m, classification_metrics(val_labels, softmax_np(logits))))
        return max(scored, key=lambda t: t[2]["balanced_accuracy"])

    def keep_epoch(epoch: int, chosen, val_row: dict):
        """Write `chosen` (live or EMA weights) as the run's model, best.pt, with the epoch's validation record."""
        save_run_model(best_path, chosen, model_config, meta={**meta_base, "epoch": epoch, "val": val_row})

    for epoch in range(start_epoch, cfg.epochs):
        train_model.train()
        t0 = time.time()
        order = part["train"][torch.multinomial(sample_weights, len(part["train"]), replacement=True, generator=generator).numpy()]
        sums = {}
        for b in range(steps_per_epoch):
            if any_rank(should_stop(), ctx):  # a stop on any rank stops all at this batch boundary
                raise TrainingStopped(f"stopped during epoch {epoch + 1}; last good checkpoint kept")
            # the global batch's random draws are made on every rank; each rank augments and trains on its own slice
            idx = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            mine = local_slice(idx, ctx)
            augment_state = generator.get_state()
            x = to_model_tensor(torch.from_numpy(images[idx[mine]]), model_config)
            x = augment_batch(x, augment_cfg, generator, std=model_config.std, rows=mine, batch_size=len(idx))
            y = torch.from_numpy(labels[idx[mine]])
            if on_cuda:
                x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                out_s = train_model(x)
                out_t = None
                if teacher is not None:
                    out_t = teacher_cache.get(epoch, b, idx[mine], device)
                    if out_t is None:
                        out_t = teacher_outputs(teacher, teacher_config, teacher_images[idx], augment_cfg,
                                                torch.Generator().set_state(augment_state), mine, device)
                        teacher_cache.put(epoch, b, idx[mine], out_t)
                parts = stage_losses(stage, out_s, y, out_t, projector, alpha=cfg.alpha, beta=cfg.beta,
                                     gamma=cfg.gamma, temperature=cfg.temperature,
                                     label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            (parts["total"] + ddp_anchor(out_s, ctx)).backward()
            if projector is not None:
                average_gradients(projector.parameters(), ctx)
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            scheduler.step_update(num_updates=epoch * steps_per_epoch + b + 1)
            assert_replicas_identical(model, ctx)
            if ema is not None:
                ema.update(model, step=epoch * steps_per_epoch + b + 1)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            callback("batch", epoch=epoch + 1, epochs=cfg.epochs, batch=b + 1, batches=steps_per_epoch,
                     loss=parts["total"].item(), seconds=time.time() - t0)
        sums = mean_over_ranks(sums, ctx)  # the logged losses cover the global batches
        if not ctx.is_main:  # rank 0 validates and writes; the others wait for it
            barrier(ctx)
            continue
        with main_rank_uses_node(ctx):
            weights_name, chosen, val = validate()
        row = {"epoch": epoch + 1, **{f"loss_{k}": v / steps_per_epoch for k, v in sums.items()},
               "lr": optimizer.param_groups[0]["lr"],
               **val_fields(val), "weights": weights_name, "seconds": time.time() - t0}
        kept = cfg.keep == "last" or val["balanced_accuracy"] > best_score
        if kept:
            best_score = val["balanced_accuracy"]
            keep_epoch(epoch + 1, chosen, row)
        save_checkpoint(last_path, model, model_config, meta=meta_base, extra={
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else {},
            "projector": projector.state_dict() if projector is not None else {},
            "generator": generator.get_state(), "epoch": epoch, "best_score": best_score})
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        callback("epoch", **row, best=kept)
        barrier(ctx)

    if not ctx.is_main:
        return None
    with main_rank_uses_node(ctx):  # the other ranks have left
        last_epoch = max(start_epoch, cfg.epochs)  # the epoch last.pt holds (a resumed run may have trained more)
        if cfg.keep == "last" and read_checkpoint(best_path)["meta"].get("epoch") != last_epoch:
            # a finished run resumed with --keep last: best.pt from its last epoch's live or EMA weights
            weights_name, chosen, val = validate()
            keep_epoch(last_epoch, chosen, {"epoch": last_epoch, **val_fields(val), "weights": weights_name})
        report = finalize_run(out, images, labels, part, fingerprint)
    callback("done", **{k: report["test"][k] for k in SUMMARY})
    return report


def val_fields(val: dict) -> dict:
    """The validation figures a metrics row and a checkpoint record."""
    return {f"val_{k}": val[k] for k in SUMMARY}


@torch.no_grad()
def teacher_outputs(teacher, config, images_uint8, augment_cfg, generator, mine=slice(None), device="cpu"):
    """The frozen teacher's outputs on this rank's slice `mine` of its own-size copy of a global batch,
    augmented by replaying the student batch's random draws (`generator` restored to their state), so
    both models see the same view."""
    x = to_model_tensor(torch.from_numpy(np.ascontiguousarray(images_uint8[mine])), config)
    return teacher(augment_batch(x, augment_cfg, generator, std=config.std, rows=mine,
                                 batch_size=len(images_uint8)).to(device))


def save_run_model(best_path: Path, model, config, meta: dict) -> None:
    """Write a run's new, not yet calibrated model (best.pt). Its report.json goes first: that file marks a finished
    run whose best.pt is calibrated (what the Train page lists and promotion takes) until finalize_run writes it."""
    (Path(best_path).parent / "report.json").unlink(missing_ok=True)
    save_checkpoint(best_path, model, config, meta=meta)


def finalize_run(out: Path, images, labels, part, fingerprint: str) -> dict:
    """Calibrate best.pt on validation, fit its out-of-distribution test (training features, validation
    threshold), store both in it, and write report.json (test split). A run on fewer images than the full
    HAM10000 is marked as a demo."""
    best_path = Path(out) / "best.pt"
    model, config, meta = load_checkpoint(best_path)
    fitted = fit_model_calibration(model.logits_and_features, config, images, labels, part)
    calibration = fitted["calibration"]
    test_logits = batched_outputs(model.logits_and_features, images[part["test"]], config, tta=calibration["tta"]).logits
    test = classification_metrics(labels[part["test"]], softmax_np(test_logits, calibration["temperature"]))
    meta = {**meta, **fitted, "demo": bool(len(labels) < HAM10000_IMAGES),
            "test": {k: test[k] for k in SUMMARY}}
    save_checkpoint(best_path, model, config, meta=meta)
    report = {"split": "test", "split_fingerprint": fingerprint, "n_test": int(len(part["test"])),
              "calibration": calibration, "test": test,
              "params": count_params(model), "kept_epoch": meta.get("epoch"), "demo": meta["demo"],
              "val": {"balanced_accuracy": calibration["val_balanced_accuracy_tta" if calibration["tta"]
                                                      else "val_balanced_accuracy_plain"]}}
    (Path(out) / "report.json").write_text(json.dumps(report, indent=2))
    return report
