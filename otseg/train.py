"""Train OTSeg: one ``train(cfg)`` that reads top to bottom.

Run: ``otseg train --preset voc-inductive --set data_root=/data/VOCdevkit --set clip_weights=ViT-B-16.pt``;
multi-GPU: ``torchrun --nproc_per_node 4 -m cli.otseg_cli train --preset ...`` (gloo on CPU, nccl on GPU).

Order: config -> distributed setup -> output folder (lock, space, resume) -> data -> model -> optimizer and
schedule -> loop (lr, batch, forward, pseudo-labels, loss, backward, step, log, evaluate, checkpoint) -> final
model file and training curves.

Reproducibility: the sample order is a seeded permutation per epoch, cut into global batches that are split
across processes; every sample's augmentation is seeded by ``(seed, draw number)``; dropout uses the global RNG,
whose state is checkpointed. Resuming from a checkpoint therefore continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from otseg.build import build_otseg
from otseg.checkpoint import load_model, load_partial_state, save_model
from otseg.config import ModelConfig, check_config_keys, get_model_config
from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit
from otseg.data.transforms import TrainTransform
from otseg.evaluate import evaluate
from otseg.inference import InferenceSettings
from otseg.modeling.losses import OTSegLoss
from otseg.modeling.otseg import OTSeg
from otseg.progress import make_progress
from otseg.run_data import build_run_data

__all__ = ["TrainConfig", "TrainingDiverged", "lr_at", "train"]

UNSEEN_MARK = 254  # transductive training: pixels of unseen classes, to be pseudo-labelled


@dataclass(frozen=True)
class TrainConfig:
    """A training run, as plain values (presets in ``otseg/configs/train/*.json``)."""

    # model
    model: str = "otseg-vit-b16"  # model config name or JSON path
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"sinkhorn_grad": "implicit"}
    clip_weights: str | None = None  # CLIP weights file or local-dir:; None = random CLIP (tests only)
    init_from: str | None = None  # a model file to start from (the inductive model for transductive training)
    # data
    dataset: str = "voc"  # voc | context | coco-stuff | ade | folder | synthetic
    data_root: str | None = None  # dataset root (not needed for synthetic)
    setting: str = "inductive"  # inductive (seen classes only) | transductive (pseudo-labels) | fully
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticWorld options and image counts
    crop_size: int = 512  # training crop
    resize_scale: tuple[int, int] = (2048, 512)  # (long, short) base scale of the random rescale
    ratio_range: tuple[float, float] = (0.5, 2.0)  # random rescale ratio
    cat_max_ratio: float = 0.75  # largest share of a crop one class may take
    photometric: bool = True  # photometric distortion
    # optimisation
    iters: int = 20000  # optimizer steps
    batch_size: int = 16  # global batch (all processes, all accumulation micro-steps)
    grad_accum: int = 1  # micro-steps per optimizer step (each normalises its loss by its own present masks)
    lr: float = 2e-4  # learning rate of every trainable parameter
    weight_decay: float = 0.01  # AdamW decay (none on norm layers)
    warmup_iters: int = 1500  # linear warm-up steps
    warmup_ratio: float = 1e-6  # warm-up starts at lr * ratio
    min_lr: float = 1e-6  # poly schedule floor
    poly_power: float = 0.9  # poly schedule power
    grad_clip: float | None = None  # max gradient norm (None: off, as the paper)
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    ignore_as_negative: bool = True  # label-255 pixels as negatives of every class (the public code)
    # evaluation
    eval_interval: int = 0  # steps between evaluations (0: at the end only)
    eval_images: int | None = None  # evaluate on the first images only
    eval_short_side: int | None = 512  # test resize (short side)
    eval_crop: int = 512  # sliding-window crop
    eval_stride: int = 426  # sliding-window stride
    eval_mode: str = "slide"  # slide | whole
    # run
    out_dir: str = "runs/otseg"  # checkpoints, logs and curves
    checkpoint_interval: int = 2000  # steps between checkpoints (0: at the end only)
    log_interval: int = 50  # steps between log lines
    seed: int = 0
    num_workers: int = 4  # data loader workers per process
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True  # rich progress bar

    def __post_init__(self) -> None:
        if self.setting not in ("inductive", "transductive", "fully"):
            raise ValueError(f"setting must be inductive, transductive or fully, got {self.setting!r}.")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}.")
        for name in ("iters", "batch_size", "grad_accum", "crop_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.setting == "transductive" and self.init_from is None:
            raise ValueError(
                "transductive training starts from an inductive model: set init_from=<model file>, e.g. "
                "runs/voc-inductive/model_step10000.safetensors."
            )
        check_config_keys(ModelConfig, self.model_overrides, "model_overrides")
        self.eval_settings()  # validates the evaluation values now, not after hours of training

    def eval_settings(self) -> InferenceSettings:
        """The test-time resize and window settings of this run."""
        return InferenceSettings(
            short_side=self.eval_short_side, mode=self.eval_mode, crop=self.eval_crop, stride=self.eval_stride
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        check_config_keys(cls, values, "training config")
        values = dict(values)
        for key in ("resize_scale", "ratio_range"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): poly decay to ``min_lr`` with linear warm-up.

    Three cases: during warm-up, the poly value scaled by a factor rising linearly from ``warmup_ratio`` to 1;
    after it, ``(lr - min_lr) * (1 - step / iters) ** power + min_lr``; at the end, ``min_lr``.
    """
    poly = (cfg.lr - cfg.min_lr) * (1 - min(step, cfg.iters) / cfg.iters) ** cfg.poly_power + cfg.min_lr
    if step < cfg.warmup_iters:
        return poly * (1 - (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio))
    return poly


# --- distributed setup -------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(cfg: TrainConfig) -> _Dist:
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available on this machine; use device=cpu.")
    if "RANK" not in os.environ:
        return _Dist(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return _Dist(rank, world, local, device)


# --- output folder: lock, space, writability -------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(out: Path) -> Path:
    """Claim ``out`` for this run: a lock file with pid and host; a live owner makes this fail."""
    lock = out / ".lock"
    host = socket.gethostname()
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = lock.read_text().split()
        pid, owner_host = (int(owner[0]), owner[1]) if len(owner) == 2 else (-1, "")
        if owner_host == host and pid > 0 and not _pid_alive(pid):
            lock.unlink()  # a crashed run left it
            return _acquire_lock(out)
        raise RuntimeError(
            f"{out} is in use by another training run (pid {pid} on {owner_host or '?'}). Use another out_dir, or "
            f"delete {lock} if that run is gone."
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()} {host}\n")
    return lock


def _check_output_dir(out: Path, needed_bytes: int) -> None:
    """Fail before training when ``out`` cannot be written or lacks room for the checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as err:
        raise RuntimeError(f"cannot write to the output folder {out}: {err}. Choose a writable out_dir.") from err
    free = shutil.disk_usage(out).free
    if free < needed_bytes:
        raise RuntimeError(
            f"only {free / 2**20:.0f} MiB free under {out}; checkpoints need about {needed_bytes / 2**20:.0f} MiB. "
            "Free some space or choose another out_dir."
        )


# --- data --------------------------------------------------------------------------------------------------------


class _AugmentedSamples(Dataset):
    """A dataset whose item ``(index, draw)`` is augmented with the RNG seeded by ``(seed, draw)``.

    The label is then remapped for the training setting.
    """

    def __init__(self, dataset: Dataset, transform: TrainTransform, label_map: Tensor, seed: int) -> None:
        self.dataset, self.transform, self.label_map, self.seed = dataset, transform, label_map, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, draw = key
        item = self.dataset[index]
        with torch.random.fork_rng(devices=[]):  # only the CPU generator: CUDA's (dropout) stays untouched
            torch.default_generator.manual_seed(self.seed * 1_000_003 + draw)
            image, label = self.transform(item["image"], item["label"])
        return image, self.label_map[label]


class _GlobalBatches:
    """Batch sampler: epochs of seeded permutations cut into global batches, this process's share of each.

    Yields, for steps ``start .. iters - 1`` and each accumulation micro-step, a list of ``(index, draw)`` keys,
    where ``draw`` numbers the sample within the whole run (the augmentation seed).
    """

    def __init__(self, length: int, cfg: TrainConfig, rank: int, world: int, start: int) -> None:
        if cfg.batch_size % (world * cfg.grad_accum):
            raise ValueError(
                f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum = {world} x {cfg.grad_accum}."
            )
        if length == 0:
            raise ValueError("the training dataset is empty.")
        self.length, self.cfg, self.rank, self.world, self.start = length, cfg, rank, world, start
        self.micro = cfg.batch_size // (world * cfg.grad_accum)

    def __len__(self) -> int:
        return (self.cfg.iters - self.start) * self.cfg.grad_accum

    def _order(self, epoch: int) -> Tensor:
        return torch.randperm(self.length, generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cfg, epoch, order = self.cfg, -1, None
        for step in range(self.start, cfg.iters):
            for accum in range(cfg.grad_accum):
                keys = []
                for j in range(self.micro):
                    # position of this sample in the global stream: step, micro-step, process, slot
                    draw = (step * cfg.grad_accum + accum) * self.micro * self.world + self.rank * self.micro + j
                    if draw // self.length != epoch:
                        epoch = draw // self.length
                        order = self._order(epoch)
                    keys.append((int(order[draw % self.length]), draw))
                yield keys


def _label_map(split: ZeroShotSplit, setting: str) -> Tensor:
    """Lookup table ``(256,)`` from dataset labels to training labels for the setting."""
    if setting == "inductive":
        return split.inductive_label_map()
    lut = torch.arange(256, dtype=torch.int64)
    lut[split.num_classes :] = IGNORE_INDEX
    if setting == "transductive":
        lut[list(split.unseen)] = UNSEEN_MARK
    return lut


def _pseudo_label(labels: Tensor, logits: Tensor, unseen: Tensor) -> Tensor:
    """Fill ``UNSEEN_MARK`` pixels with the argmax over unseen classes of the ensemble logits (no gradient).

    Args:
        labels: ``(B, H, W)`` training labels.
        logits: ``(B, K, h, w)`` OTSeg+ ensemble logits (:meth:`OTSeg.ensemble`), detached.
        unseen: ``(K,)`` bool.
    """
    with torch.no_grad():
        prob = torch.sigmoid(logits).masked_fill(~unseen.view(1, -1, 1, 1), -1.0)
        if prob.shape[-2:] != labels.shape[-2:]:
            prob = torch.nn.functional.interpolate(prob, size=labels.shape[-2:], mode="nearest")
        return torch.where(labels == UNSEEN_MARK, prob.argmax(1), labels)


# --- optimizer ---------------------------------------------------------------------------------------------------


def _optimizer(model: OTSeg, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; LayerNorm weights and biases get no weight decay."""
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters(recurse=False)
    }
    trainable = model.trainable_parameters()
    decay = [p for p in trainable if id(p) not in norm_params]
    no_decay = [p for p in trainable if id(p) in norm_params]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _autocast(cfg: TrainConfig, device: torch.device):
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


# --- checkpoints -------------------------------------------------------------------------------------------------


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state: the CPU generator and, on CUDA, its own device's."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _checkpoint_bytes(model: OTSeg, full: bool) -> int:
    """Room the checkpoints need: trainable weights with Adam's two moments, the model file, twice (atomic)."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    everything = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * (3 * trainable + (everything if full else trainable))


def _save_training_state(
    path: Path, model: OTSeg, optimizer, scaler, step: int, cfg: TrainConfig, best, rng: list[dict[str, Any]]
) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {
        "format": "otseg-train/1",
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable},
        "optimizer": optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": rng,  # one entry per process, by rank
        "config": cfg.to_dict(),
        "model_config": model.config.to_dict(),
        "best_hiou": best,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_training_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(
            f"cannot resume from {path}: the checkpoint is unreadable ({err}). Delete it to start over, or restore "
            "an intact copy."
        ) from err
    if not isinstance(state, dict) or state.get("format") != "otseg-train/1":
        raise RuntimeError(f"{path} is not an otseg training checkpoint.")
    return state


# --- logging -----------------------------------------------------------------------------------------------------


class _Log:
    """Append-only JSONL metrics log; on resume, entries after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            path.write_text("".join(f"{ln}\n" for ln in kept))

    def write(self, **entry: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


# --- the loop ----------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a model; returns a summary with the output paths and the last metrics.

    A first Ctrl-C (SIGINT) stops at the end of the current step and writes a checkpoint that resumes exactly; a
    second one interrupts at once (the last periodic checkpoint stays).

    Raises:
        TrainingDiverged: if the loss is not finite (the last good checkpoint is kept).
    """
    env = _setup_distributed(cfg)
    torch.manual_seed(cfg.seed)  # the same model on every process
    out = Path(cfg.out_dir)
    lock = None
    if env.main:
        _check_output_dir(out, needed_bytes=0)
        lock = _acquire_lock(out)
    try:
        with _StopRequest(env) as stop:
            return _train(cfg, env, out, resume, stop)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)


class _StopRequest:
    """SIGINT handling: the first signal asks for a stop at the next step boundary, the second interrupts."""

    def __init__(self, env: _Dist) -> None:
        self.env, self.flag, self.previous = env, False, None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if self.env.main:
            print("\nstopping after this step (Ctrl-C again to interrupt at once)", flush=True)

    def requested(self) -> bool:
        """Whether any process was asked to stop (agreed across processes, so all stop at the same step)."""
        if self.env.world == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


# Fields a resumed run must share with the checkpoint for the data stream and the optimisation to continue
# exactly; the others (output, evaluation, logging, workers, iters) may change.
_RESUME_FREE = {
    "out_dir",
    "iters",
    "eval_interval",
    "eval_images",
    "eval_short_side",
    "eval_crop",
    "eval_stride",
    "eval_mode",
    "checkpoint_interval",
    "log_interval",
    "num_workers",
    "device",
    "progress",
}


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    current = json.loads(json.dumps(cfg.to_dict()))
    saved = json.loads(json.dumps(saved))
    changed = sorted(k for k in current if k not in _RESUME_FREE and current[k] != saved.get(k))
    if changed:
        before = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise ValueError(
            f"cannot resume: {changed} differ from the checkpoint ({before}). Resume with the same values, or start "
            "a new run in another out_dir."
        )
    if current["iters"] != saved["iters"]:
        warnings.warn(
            f"resuming with iters={current['iters']} instead of {saved['iters']}: the learning-rate schedule changes "
            "from here on.",
            stacklevel=3,
        )


def _gather_rng(env: _Dist) -> list[dict[str, Any]]:
    """Every process's RNG state, indexed by rank (collective under DDP)."""
    local = _rng_state(env.device)
    if env.world == 1:
        return [local]
    states: list[Any] = [None] * env.world
    dist.all_gather_object(states, local)
    return states


def _model_meta(cfg: TrainConfig, split: ZeroShotSplit, step: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "class_names": list(split.class_names),
        "unseen": list(split.unseen),
        "setting": cfg.setting,
        "step": step,
        "dataset": cfg.dataset,
        "synthetic": cfg.synthetic,
        "clip_weights": cfg.clip_weights,
        "metrics": None if metrics is None else {k: v for k, v in metrics.items() if k != "per_class"},
    }


def _train(cfg: TrainConfig, env: _Dist, out: Path, resume: bool, stop: _StopRequest) -> dict[str, Any]:
    ckpt_path, model_path = out / "checkpoint.pt", out / "model.safetensors"
    state = _load_training_state(ckpt_path) if resume and ckpt_path.is_file() else None
    if resume and state is None and env.main:
        print(f"no checkpoint at {ckpt_path}: starting from scratch")
    if state is not None:
        _check_resume_config(state["config"], cfg)
    start = 0 if state is None else int(state["step"])

    # data
    data = build_run_data(cfg)
    split = data.split
    names = split.seen_names if cfg.setting == "inductive" else split.class_names
    transform = TrainTransform(
        crop_size=cfg.crop_size,
        scale=cfg.resize_scale,
        ratio_range=cfg.ratio_range,
        cat_max_ratio=cfg.cat_max_ratio,
        photometric=cfg.photometric,
    )
    samples = _AugmentedSamples(data.train, transform, _label_map(split, cfg.setting), cfg.seed)
    batches = _GlobalBatches(len(samples), cfg, env.rank, env.world, start)
    loader = DataLoader(
        samples,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=env.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (dropout) untouched
    )

    # model: the architecture of a resumed run comes from its checkpoint, not the command line
    cache = out / "cache"
    if state is not None:
        model = build_otseg(
            ModelConfig.from_dict(state["model_config"]), clip_weights=cfg.clip_weights, cache_dir=cache
        )
    elif cfg.init_from:
        model, _ = load_model(
            cfg.init_from, clip_weights=cfg.clip_weights, cache_dir=cache, overrides=cfg.model_overrides
        )
    else:
        model_cfg = get_model_config(cfg.model).replace(**cfg.model_overrides)
        model = build_otseg(model_cfg, clip_weights=cfg.clip_weights, cache_dir=cache)
    model.to(env.device)
    if env.main:
        _check_output_dir(out, needed_bytes=_checkpoint_bytes(model, full=cfg.clip_weights is None))
    text = model.class_embeddings(names).to(env.device) if model.learnable_context is None else None
    torch.manual_seed(cfg.seed + env.rank)  # from here on (dropout) the processes differ, reproducibly
    unseen = torch.tensor([n in set(split.unseen_names) for n in names], device=env.device)
    net = model
    if env.world > 1:
        net = DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.type == "cuda" else None, find_unused_parameters=True
        )

    # optimizer, schedule, precision
    optimizer = _optimizer(model, cfg)
    autocast, scaler = _autocast(cfg, env.device)
    best = None
    if state is not None:
        load_partial_state(model, state["model"], str(ckpt_path))
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) != env.world:
            raise ValueError(f"{ckpt_path} was written by {len(rng)} process(es); resume with as many.")
        _set_rng_state(rng[env.rank], env.device)
        best = state["best_hiou"]
    loss_fn = OTSegLoss(ignore_as_negative=cfg.ignore_as_negative)
    log = _Log(out / "metrics.jsonl", start if state is not None else None) if env.main else None
    if env.main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def run_eval(step: int) -> dict[str, Any]:
        nonlocal best
        metrics = evaluate(
            model,
            data.val,
            split,
            settings=cfg.eval_settings(),
            calibrate_seen=cfg.setting == "inductive",
            max_images=cfg.eval_images,
            device=env.device,
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
        rng = _gather_rng(env)  # collective: every process takes part
        if env.main:
            _save_training_state(ckpt_path, model, optimizer, scaler, step, cfg, best, rng)
            meta = _model_meta(cfg, split, step, metrics)
            save_model(
                model, out / f"model_step{step}.safetensors", trainable_only=cfg.clip_weights is not None, meta=meta
            )

    # loop
    model.train()
    step, last_metrics, t0 = start, None, time.perf_counter()
    progress = make_progress() if (env.main and cfg.progress) else None
    task = progress.add_task("training", total=cfg.iters, completed=start, info="") if progress else None
    batch_iter = iter(loader)
    try:
        if progress:
            progress.start()
        while step < cfg.iters:
            if stop.requested():
                checkpoint(step, last_metrics)
                if env.main:
                    print(f"stopped at step {step}: checkpoint written to {ckpt_path}; continue with --resume")
                return {"interrupted": True, "step": step, "checkpoint": str(ckpt_path)}
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            parts: dict[str, float] = {}
            for accum in range(cfg.grad_accum):
                images, labels = next(batch_iter)
                images, labels = images.to(env.device), labels.to(env.device)
                sync = accum == cfg.grad_accum - 1 or env.world == 1
                with net.no_sync() if (not sync and env.world > 1) else nullcontext(), autocast:
                    step_text = text if text is not None else model.class_embeddings(names)
                    outputs = net(images, step_text)
                    if cfg.setting == "transductive":
                        ensemble = model.ensemble({k: v.detach().float() for k, v in outputs.items()})
                        labels = _pseudo_label(labels, ensemble, unseen)
                    losses = loss_fn(outputs, labels)
                loss = losses["loss"] / cfg.grad_accum
                finite = torch.isfinite(loss.detach()).float().reshape(1)
                if env.world > 1:
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every process stops together
                if not bool(finite.item()):
                    raise TrainingDiverged(
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
            if progress:
                progress.update(task, completed=step, info=f"loss {parts['loss']:.3f}  lr {lr:.2e}")
            if log is not None and (step % cfg.log_interval == 0 or step == cfg.iters or step == start + 1):
                log.write(step=step, lr=lr, time=time.perf_counter() - t0, **parts)
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < cfg.iters:
                last_metrics = run_eval(step)
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < cfg.iters:
                checkpoint(step, last_metrics)
    finally:
        if progress:
            progress.stop()

    last_metrics = run_eval(step)
    checkpoint(step, last_metrics)
    summary = {"step": step, "metrics": last_metrics, "checkpoint": str(ckpt_path), "out_dir": str(out)}
    if env.main:
        meta = _model_meta(cfg, split, step, last_metrics)
        save_model(model, model_path, trainable_only=cfg.clip_weights is not None, meta=meta)
        from otseg.plots import plot_training_curves

        summary["model"] = str(model_path)
        summary["curves"] = str(plot_training_curves(out / "metrics.jsonl", out / "training_curves.png"))
    return summary
