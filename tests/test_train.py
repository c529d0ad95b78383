"""Training: schedule, exact resume, DDP equivalence, pseudo-labels, and the run-folder safety checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from otseg.build import load_otseg
from otseg.engine import TrainConfig, TrainingDiverged, lr_at, train
from otseg.engine import run_dir as run_dir_module
from otseg.engine import trainer as train_module
from otseg.engine.optim import build_optimizer
from otseg.engine.sampling import UNSEEN_MARK, pseudo_label
from otseg.predictor import InferenceSettings
from otseg.presets import list_presets, load_preset
from otseg.utils.io import read_state_dict

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(out_dir, **changes):
    values = dict(
        model="otseg-tiny",
        dataset="synthetic",
        synthetic={"image_size": 64, "train_images": 12, "val_images": 4},
        crop_size=64,
        resize_scale=(128, 64),
        iters=6,
        batch_size=4,
        warmup_iters=2,
        lr=1e-3,
        inference=InferenceSettings(short_side=None, mode="whole"),
        allow_random_clip=True,
        checkpoint_interval=3,
        log_interval=1,
        num_workers=0,
        progress=False,
        out_dir=str(out_dir),
    )
    values.update(changes)
    return TrainConfig(**values)


def _trained_weights(out_dir):
    ckpt = torch.load(Path(out_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    return ckpt["model"]


def test_lr_schedule_warmup_and_poly():
    cfg = TrainConfig(iters=100, warmup_iters=10, lr=1e-2, min_lr=1e-4, warmup_ratio=1e-6, dataset="synthetic")
    assert lr_at(0, cfg) == pytest.approx(((1e-2 - 1e-4) + 1e-4) * 1e-6)
    poly_10 = (1e-2 - 1e-4) * (1 - 10 / 100) ** 0.9 + 1e-4
    assert lr_at(10, cfg) == pytest.approx(poly_10)
    assert lr_at(5, cfg) < lr_at(9, cfg) < lr_at(10, cfg)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) > lr_at(s + 1, cfg) for s in range(10, 99))


def test_training_writes_model_curves_and_logs(tmp_path):
    summary = train(tiny_config(tmp_path / "run"))
    out = tmp_path / "run"
    assert summary["step"] == 6 and (out / "model.safetensors").is_file() and (out / "training_curves.png").is_file()
    assert (out / "model_step3.safetensors").is_file()  # a model file at every checkpoint interval
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert any("eval" in x for x in lines) and summary["metrics"]["miou_unseen"] is not None
    assert not (out / ".lock").exists()


def test_resume_after_ctrl_c_is_bit_exact(tmp_path, monkeypatch):
    train(tiny_config(tmp_path / "straight"))
    real_lr_at = train_module.lr_at

    def ctrl_c_during_step_4(step, cfg):
        if step == 3:  # the fourth step: it finishes, then the run stops at the boundary
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr_at(step, cfg)

    monkeypatch.setattr(train_module, "lr_at", ctrl_c_during_step_4)
    summary = train(tiny_config(tmp_path / "killed", checkpoint_interval=0))
    assert summary == {"interrupted": True, "step": 4, "checkpoint": str(tmp_path / "killed" / "checkpoint.pt")}
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    train(tiny_config(tmp_path / "killed", checkpoint_interval=0), resume=True)
    straight, resumed = _trained_weights(tmp_path / "straight"), _trained_weights(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s] == sorted(s for s in steps if s)  # no duplicated log lines after resuming


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on localhost")
def test_two_process_ddp_equals_single_process(tmp_path):
    common = dict(model_overrides={"dropout": 0.0, "prompt_dropout": 0.0}, iters=3, checkpoint_interval=0)
    single = tiny_config(tmp_path / "single", **common)
    train(single)
    config = tmp_path / "ddp.json"
    values = tiny_config(tmp_path / "ddp", **common).to_dict()
    config.write_text(json.dumps(values))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    cmd += ["-m", "cli.otseg_cli", "train", "--config", str(config)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _trained_weights(tmp_path / "single"), _trained_weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


def test_pseudo_labels_pick_the_best_unseen_class():
    labels = torch.tensor([[[0, UNSEEN_MARK], [255, UNSEEN_MARK]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 10.0  # a seen class wins everywhere, but pseudo-labels only choose among unseen ones
    logits[0, 2, 0, 1] = 5.0
    logits[0, 1, 1, 1] = 5.0
    out = pseudo_label(labels, logits, torch.tensor([False, True, True]))
    assert out.tolist() == [[[0, 2], [255, 1]]]


def test_resume_refuses_a_changed_data_or_optimisation_config(tmp_path):
    train(tiny_config(tmp_path / "run", iters=2))
    with pytest.raises(ValueError, match=r"cannot resume: \['batch_size'\]"):
        train(tiny_config(tmp_path / "run", iters=4, batch_size=2), resume=True)


def test_unknown_model_overrides_are_rejected_up_front():
    with pytest.raises(ValueError, match="unknown model_overrides keys"):
        tiny_config("unused", model_overrides={"drop_out": 0.0})


def test_transductive_needs_an_inductive_model():
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(setting="transductive")


def test_transductive_run_from_an_inductive_model(tmp_path):
    first = train(tiny_config(tmp_path / "ind", iters=2))
    summary = train(tiny_config(tmp_path / "trans", iters=2, setting="transductive", init_from=first["model"]))
    assert summary["step"] == 2 and summary["metrics"]["miou_unseen"] is not None


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_module.OTSegLoss.forward

    def poisoned(self, outputs, labels):
        losses = real(self, outputs, labels)
        if poisoned.calls >= 4:
            losses["loss"] = losses["loss"] * float("nan")
        poisoned.calls += 1
        return losses

    poisoned.calls = 0
    monkeypatch.setattr(train_module.OTSegLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(tiny_config(tmp_path / "nan"))
    state = torch.load(tmp_path / "nan" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert not (tmp_path / "nan" / ".lock").exists()


def test_two_runs_cannot_share_an_output_folder(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getppid()} {os.uname().nodename}\n")  # a live process holds it
    with pytest.raises(RuntimeError, match="in use by another training run"):
        train(tiny_config(out))
    (out / ".lock").write_text(f"999999999 {os.uname().nodename}\n")  # a dead process: the stale lock is taken over
    assert train(tiny_config(out, iters=1))["step"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_is_reported_before_training(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(RuntimeError, match="cannot write to the output folder"):
        train(tiny_config(locked / "run"))


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_dir_module.shutil, "disk_usage", lambda _: usage._replace(free=1024))
    with pytest.raises(RuntimeError, match="MiB free"):
        train(tiny_config(tmp_path / "full"))


def test_corrupt_resume_checkpoint_gives_a_clear_error(tmp_path):
    out = tmp_path / "corrupt"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="unreadable"):
        train(tiny_config(out), resume=True)


def test_final_model_file_is_loadable(tmp_path):
    summary = train(tiny_config(tmp_path / "m", iters=1))
    state = read_state_dict(summary["model"])
    assert "head.descriptor.q_proj.weight" in state


def test_weight_decay_reaches_norms_by_default_as_in_the_public_run():
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True)
    trainable = {id(p) for p in model.trainable_parameters()}
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    norms = {id(p) for m in layer_norms for p in m.parameters()} & trainable
    assert norms  # the prompt norm and the decoder norms are trained

    def groups(optimizer):
        return {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups if g["params"]}

    public = groups(build_optimizer(model, lr=2e-4, weight_decay=0.01))
    assert public == {0.01: trainable}  # one group, every trainable parameter, LayerNorms included
    intended = groups(build_optimizer(model, lr=2e-4, weight_decay=0.01, norm_decay=False))
    assert intended == {0.01: trainable - norms, 0.0: norms}  # exactly the LayerNorm weights and biases exempt
    assert TrainConfig().norm_decay
    for name in list_presets("train"):  # the presets keep the default
        assert "norm_decay" not in load_preset("train", name), name
