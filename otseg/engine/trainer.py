"""Train OTSeg: one ``train(cfg)`` that reads top to bottom.

Run: ``otseg train --preset voc-inductive --set data_root=/data/VOCdevkit --set clip_weights=ViT-B-16.pt``;
multi-GPU: ``torchrun --nproc_per_node 4 -m cli.otseg_cli train --preset ...`` (gloo on CPU, nccl on GPU).

Order: processes -> output folder (one run per folder, lock, space) -> resume state -> data -> model -> optimizer
and precision -> loop (lr, batch, forward, pseudo-labels, loss, backward, step, log, evaluate, checkpoint) ->
final model file and training curves.

Reproducibility: the data stream is a pure function of the seed and the step (:mod:`otseg.engine.sampling`);
dropout uses the global RNG, whose state every checkpoint keeps per process. Resuming therefore continues bit for
bit.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from otseg.build import load_otseg
from otseg.checkpoint import load_state, save_model
from otseg.config import ModelConfig
from otseg.data.classes import ZeroShotSplit
from otseg.data.sources import build_sources
from otseg.data.transforms import TrainTransform
from otseg.engine.config import TrainConfig, lr_at
from otseg.engine.distributed import Processes, StopRequest, setup_processes
from otseg.engine.evaluate import evaluate
from otseg.engine.optim import build_optimizer, precision
from otseg.engine.run_dir import CHECKPOINT, MetricsLog, acquire_lock, check_output_dir, prepare_run_folder
from otseg.engine.sampling import AugmentedSamples, GlobalBatches, label_map, pseudo_label
from otseg.engine.state import (
    check_resume_config,
    checkpoint_bytes,
    gather_rng,
    load_training_state,
    restore_rng,
    save_training_state,
)
from otseg.modeling.losses import OTSegLoss
from otseg.utils.progress import StepReporter

__all__ = ["TrainingDiverged", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _clip_record(clip_weights: str | None, out: Path) -> dict[str, str | None]:
    """Where the CLIP weights are, absolute and relative to the run folder, for model files to record."""
    if clip_weights is None:
        return {"clip_weights": None}
    local = clip_weights.startswith("local-dir:")
    location = Path(clip_weights[len("local-dir:") :] if local else clip_weights).resolve()
    relative = os.path.relpath(location, out.resolve())
    prefix = "local-dir:" if local else ""
    return {"clip_weights": f"{prefix}{location}", "clip_weights_relative": f"{prefix}{relative}"}


def _model_meta(cfg: TrainConfig, split: ZeroShotSplit, step: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What a model file records besides its weights: classes, split, run, CLIP weights, evaluation settings."""
    return {
        "class_names": list(split.class_names),
        "unseen": list(split.unseen),
        "setting": cfg.setting,
        "step": step,
        "dataset": cfg.dataset,
        "synthetic": cfg.synthetic,
        **_clip_record(cfg.clip_weights, Path(cfg.out_dir)),
        "inference": cfg.inference.to_dict(),
        "metrics": None if metrics is None else {k: v for k, v in metrics.items() if k != "per_class"},
    }


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or resume) a model; returns a summary with the output paths and the last metrics.

    A folder holds one run: a new run into a folder with an earlier one is refused unless ``resume`` (continue it)
    or ``overwrite`` (delete it first). A first Ctrl-C (SIGINT) stops at the end of the current step and writes a
    checkpoint that resumes exactly (the summary then has ``interrupted``); a second one interrupts at once.

    Raises:
        TrainingDiverged: if the loss is not finite (the last good checkpoint is kept).
        otseg.engine.run_dir.RunFolderError: the folder cannot take the run.
    """
    procs = setup_processes(cfg.device)
    torch.manual_seed(cfg.seed)  # the same model on every process
    out = Path(cfg.out_dir)
    lock = None
    if procs.main:
        check_output_dir(out, needed_bytes=0)
        prepare_run_folder(out, resume=resume, overwrite=overwrite)
        lock = acquire_lock(out)
    try:
        with StopRequest(procs) as stop:
            return _train(cfg, procs, out, resume, stop)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)


def _train(cfg: TrainConfig, procs: Processes, out: Path, resume: bool, stop: StopRequest) -> dict[str, Any]:
    ckpt_path, model_path = out / CHECKPOINT, out / "model.safetensors"
    state = load_training_state(ckpt_path) if resume else None
    if state is not None:
        check_resume_config(state["config"], cfg)
    start = 0 if state is None else int(state["step"])

    # data
    data = build_sources(
        cfg.dataset, cfg.data_root, setting=cfg.setting, synthetic=cfg.synthetic, **cfg.dataset_options()
    )
    split = data.split
    names = split.seen_names if cfg.setting == "inductive" else split.class_names
    transform = TrainTransform(
        crop_size=cfg.crop_size,
        scale=cfg.resize_scale,
        ratio_range=cfg.ratio_range,
        cat_max_ratio=cfg.cat_max_ratio,
        photometric=cfg.photometric,
    )
    samples = AugmentedSamples(data.train, transform, label_map(split, cfg.setting), cfg.seed)
    batches = GlobalBatches(
        len(samples), cfg.batch_size, cfg.grad_accum, cfg.iters, cfg.seed, procs.rank, procs.world, start
    )
    loader = DataLoader(
        samples,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=procs.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (dropout) untouched
    )

    # model: a resumed run rebuilds the architecture its checkpoint records, not the command line's
    source = ModelConfig.from_dict(state["model_config"]) if state is not None else cfg.init_from or cfg.model
    model, _ = load_otseg(
        source,
        clip_weights=cfg.clip_weights,
        allow_random_clip=cfg.allow_random_clip,
        overrides=None if state is not None else cfg.model_overrides,
        cache_dir=out / "cache",
        device=procs.device,
    )
    if procs.main:
        check_output_dir(out, needed_bytes=checkpoint_bytes(model, full=cfg.clip_weights is None))
    text = model.class_embeddings(names).to(procs.device) if model.learnable_context is None else None
    torch.manual_seed(cfg.seed + procs.rank)  # from here on (dropout) the processes differ, reproducibly
    unseen = torch.tensor([n in set(split.unseen_names) for n in names], device=procs.device)
    net = model
    if procs.world > 1:
        device_ids = [procs.local_rank] if procs.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    # optimizer, precision, state
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.norm_decay)
    autocast, scaler = precision(cfg.amp, procs.device)
    best = None
    if state is not None:
        load_state(model, state["model"], str(ckpt_path), partial=True)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], procs, ckpt_path)
        best = state["best_hiou"]
    loss_fn = OTSegLoss(ignore_as_negative=cfg.ignore_as_negative)
    log = MetricsLog(out / "metrics.jsonl", start if state is not None else None) if procs.main else None
    if procs.main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def run_eval(step: int) -> dict[str, Any]:
        nonlocal best
        metrics = evaluate(
            model,
            data.val,
            split,
            settings=cfg.inference,
            calibrate_seen=cfg.setting == "inductive",
            max_images=cfg.eval_images,
            device=procs.device,
            show_progress=cfg.progress,
        )
        model.train()
        summary = {k: v for k, v in metrics.as_dict().items() if k != "per_class"}
        if summary.get("hiou") is not None and (best is None or summary["hiou"] > best):
            best = summary["hiou"]
        if log is not None:
            log.write(step=step, eval=summary)
        return metrics.as_dict()

    def checkpoint(step: int, metrics: dict[str, Any] | None) -> None:
        rng = gather_rng(procs)  # collective: every process takes part
        if procs.main:
            save_training_state(ckpt_path, model, optimizer, scaler, step, cfg, best, rng)
            meta = _model_meta(cfg, split, step, metrics)
            trainable_only = cfg.clip_weights is not None
            save_model(model, out / f"model_step{step}.safetensors", trainable_only=trainable_only, meta=meta)

    # loop
    model.train()
    step, last_metrics = start, None
    batch_iter = iter(loader)
    reporter = StepReporter(
        "training",
        cfg.iters,
        start=start,
        every=cfg.log_interval,
        images_per_step=cfg.batch_size,
        enabled=procs.main and cfg.progress,
    )
    t0 = time.perf_counter()
    with reporter:
        while step < cfg.iters:
            if stop.requested():
                checkpoint(step, last_metrics)
                if procs.main:
                    print(f"stopped at step {step}: checkpoint written to {ckpt_path}; continue with --resume")
                return {"interrupted": True, "step": step, "checkpoint": str(ckpt_path)}
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            parts: dict[str, float] = {}
            for accum in range(cfg.grad_accum):
                images, labels = next(batch_iter)
                images, labels = images.to(procs.device), labels.to(procs.device)
                sync = accum == cfg.grad_accum - 1 or procs.world == 1
                with net.no_sync() if not sync else nullcontext(), autocast:
                    outputs = net(images, text if text is not None else model.class_embeddings(names))
                    if cfg.setting == "transductive":
                        ensemble = model.ensemble({k: v.detach().float() for k, v in outputs.items()})
                        labels = pseudo_label(labels, ensemble, unseen)
                    losses = loss_fn(outputs, labels)
                loss = losses["loss"] / cfg.grad_accum
                if not procs.all_agree(bool(torch.isfinite(loss.detach())), any_of=False):
                    raise TrainingDiverged(  # every process stops together
                        f"loss is not finite ({float(loss.detach())} here) at step {step}; stopping. The last good "
                        f"checkpoint is {ckpt_path}. Lower lr, use amp=off, or check the data."
                    )
                (scaler.scale(loss) if scaler else loss).backward()
                for key, value in losses.items():
                    parts[key] = parts.get(key, 0.0) + float(value.detach()) / cfg.grad_accum
            if cfg.grad_clip:
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), cfg.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            reporter.step(step, parts["loss"], lr)
            if log is not None and (step % cfg.log_interval == 0 or step == cfg.iters or step == start + 1):
                log.write(step=step, lr=lr, time=time.perf_counter() - t0, **parts)
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < cfg.iters:
                last_metrics = run_eval(step)
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < cfg.iters:
                checkpoint(step, last_metrics)

    last_metrics = run_eval(step)
    checkpoint(step, last_metrics)
    summary = {"step": step, "metrics": last_metrics, "checkpoint": str(ckpt_path), "out_dir": str(out)}
    if procs.main:
        meta = _model_meta(cfg, split, step, last_metrics)
        save_model(model, model_path, trainable_only=cfg.clip_weights is not None, meta=meta)
        from otseg.utils.plots import plot_training_curves

        summary["model"] = str(model_path)
        summary["curves"] = str(plot_training_curves(out / "metrics.jsonl", out / "training_curves.png"))
    return summary
