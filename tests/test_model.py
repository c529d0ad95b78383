"""The OTSeg network on a tiny open_clip config: shapes, classes, losses, gradients, weights, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from otseg.build import build_otseg, load_otseg
from otseg.checkpoint import (
    PAPER_KEY_MAP,
    CheckpointError,
    load_paper_checkpoint,
    load_state,
    map_paper_state_dict,
    save_model,
)
from otseg.clip import build_clip, load_clip_weights, save_local_dir
from otseg.config import get_model_config
from otseg.modeling.losses import OTSegLoss
from otseg.modeling.text_encoder import RECENT_CLASS_LISTS

TINY = get_model_config("otseg-tiny")


def tiny(**changes):
    return build_otseg(TINY.with_overrides(changes), allow_random_clip=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny()


@pytest.fixture(scope="module")
def text(model):
    return model.class_embeddings(["cat", "dog", "red car", "sky"])


def test_random_clip_must_be_asked_for():
    with pytest.raises(ValueError, match=r"no CLIP weights given.*allow_random_clip=True"):
        build_otseg(TINY)


@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(model, text, training):
    model.train(training)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = model(images, text)
    assert set(out) == {"decoder", "score"}
    assert out["decoder"].shape == out["score"].shape == (2, 4, 64, 64)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())
    model.eval()


@pytest.mark.parametrize(("height", "width"), [(48, 72), (50, 66), (64, 64), (40, 96)])
def test_positional_embedding_interpolates_to_any_grid(model, text, height, width):
    images = torch.rand(1, 3, height, width) * 255
    dense, global_embedding = model.image_encoder(model.normalize(images))
    assert dense.shape == (1, 32, height // 8, width // 8) and global_embedding.shape == (1, 32)
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(1, height // 8, width // 8))
    out = model(images, text)
    assert out["decoder"].shape == (1, 4, height, width)


def test_class_embeddings_shape_norm_and_any_class_count(model):
    emb = model.class_embeddings(["a", "b"])
    assert emb.shape == (2, 3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 3))
    assert model.class_embeddings([f"class {i}" for i in range(7)]).shape == (7, 3, 32)
    with pytest.raises(ValueError, match="duplicates"):
        model.class_embeddings(["cat", "Cat"])
    with pytest.raises(ValueError, match="empty"):
        model.class_embeddings(["cat", " "])


def test_seen_classes_are_calibrated(model, text):
    model.eval()
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(images, text)
    seen = torch.tensor([True, True, False, False])
    plain = model.probabilities(out)
    calibrated = model.probabilities(out, seen)
    torch.testing.assert_close(plain[:, :2] - calibrated[:, :2], torch.full_like(plain[:, :2], 0.1))
    torch.testing.assert_close(plain[:, 2:], calibrated[:, 2:])
    torch.testing.assert_close(plain, torch.sigmoid(0.5 * out["decoder"] + 0.5 * out["score"]))


def test_loss_is_finite_and_only_prompts_and_head_learn(text):
    torch.manual_seed(0)
    net = tiny()
    net.train()
    images = torch.rand(2, 3, 64, 64) * 255
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[:, :8] = 255
    losses = OTSegLoss()(net(images, text), labels)
    assert set(losses) == {"loss", "decoder.focal", "decoder.dice", "score.focal", "score.dice"}
    assert bool(torch.isfinite(losses["loss"]))
    losses["loss"].backward()
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert with_grad <= trainable
    assert all(n.startswith(("image_encoder.prompt", "image_encoder.deep_prompt", "head.")) for n in trainable)
    assert {
        "image_encoder.prompt_embeddings",
        "image_encoder.deep_prompt_embeddings",
        "head.descriptor.q_proj.weight",
    } <= with_grad
    assert not any(n.startswith("text_encoder.") or n.startswith("image_encoder.transformer") for n in with_grad)


def test_finetune_backbone_switch():
    net = tiny(finetune_backbone=True)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "image_encoder.transformer.resblocks.0.attn.in_proj_weight" in trainable
    assert not any(n.startswith("text_encoder.") for n in trainable)


def test_loss_conventions():
    logits = torch.zeros(1, 2, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 255
    as_negative = OTSegLoss()({"out": logits}, labels)
    excluded = OTSegLoss(ignore_as_negative=False)({"out": logits}, labels)
    # zero logits: p = 0.5, so focal = alpha_t * log 2 * 0.25 with alpha_t 0.25 (positive) or 0.75 (negative)
    pos, neg = 0.25 * math.log(2) * 0.25, 0.75 * math.log(2) * 0.25
    # one present (image, class) pair. As negatives: class 0 = 8 negative + 8 positive pixels, class 1 = 16 negative
    torch.testing.assert_close(as_negative["out.focal"], torch.tensor(100 * ((8 * neg + 8 * pos) / 16 + neg)))
    # excluded: only the 8 labelled pixels count, all positive for class 0 and negative for class 1
    torch.testing.assert_close(excluded["out.focal"], torch.tensor(100 * (pos + neg)))
    # dice of class 0: p = 0.5 everywhere; with ignored pixels as negatives their predicted mass counts
    torch.testing.assert_close(as_negative["out.dice"], torch.tensor(1 - (2 * 4 + 1) / (8 + 8 + 1)))
    torch.testing.assert_close(excluded["out.dice"], torch.tensor(1 - (2 * 4 + 1) / (4 + 8 + 1)))
    with pytest.raises(ValueError, match="outside"):
        OTSegLoss()({"out": logits}, torch.full((1, 4, 4), 7))


def test_learnable_context_gets_gradients():
    net = tiny(learnable_context=4)
    emb = net.class_embeddings(["cat", "dog"])
    assert emb.shape == (2, 3, 32)
    emb.sum().backward()
    assert net.learnable_context.context.grad is not None
    assert float(net.learnable_context.context.grad.abs().sum()) > 0


def test_text_embedding_cache(tmp_path):
    torch.manual_seed(0)
    net = tiny()
    net.text_encoder.cache_dir = tmp_path
    first = net.text_encoder.encode_classes(["cat", "dog"])
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    torch.testing.assert_close(net.text_encoder.encode_classes(["cat", "dog"]), first)
    net.text_encoder.encode_classes(["dog", "cat"])
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # another class list, another key
    with torch.no_grad():
        net.text_encoder.text_projection.add_(1.0)  # other weights, another key
    net.text_encoder.encode_classes(["cat", "dog"])
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_recent_class_lists_are_kept_in_memory(monkeypatch):
    encoder = tiny().text_encoder
    calls = []
    encode = encoder._encode
    monkeypatch.setattr(encoder, "_encode", lambda names, size: calls.append(names) or encode(names, size))
    first = encoder.encode_classes(["cat", "dog"])
    assert encoder.encode_classes(["cat", "dog"]) is first and len(calls) == 1  # no disk cache, no new encoding
    for i in range(RECENT_CLASS_LISTS):
        encoder.encode_classes([f"class {i}"])
    encoder.encode_classes(["cat", "dog"])  # pushed out by the newer lists: encoded again
    assert len(calls) == RECENT_CLASS_LISTS + 2
    with torch.no_grad():
        encoder.ln_final.bias.add_(0.5)  # other weights: a miss
    assert not torch.equal(encoder.encode_classes(["cat", "dog"]), first)


# --- weights ---------------------------------------------------------------------------------------------------


def _reference_clip():
    torch.manual_seed(1)
    return build_clip(TINY.clip, TINY.quick_gelu)


def _trace(clip):
    """A TorchScript archive of the CLIP, the format of OpenAI's released files."""
    size = clip.visual.image_size
    images = torch.ones(1, 3, *size) if isinstance(size, tuple) else torch.ones(1, 3, size, size)
    tokens = torch.zeros(1, clip.context_length, dtype=torch.long)
    return torch.jit.trace(clip.eval(), (images, tokens))


def _assert_backbone_equals(net, clip):
    torch.testing.assert_close(net.image_encoder.conv1.weight, clip.visual.conv1.weight)
    torch.testing.assert_close(
        net.image_encoder.transformer.resblocks[1].mlp.c_fc.weight, clip.visual.transformer.resblocks[1].mlp.c_fc.weight
    )
    torch.testing.assert_close(net.text_encoder.text_projection, clip.text_projection)


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "local-dir", "torchscript"])
def test_clip_weights_round_trip(tmp_path, fmt):
    clip = _reference_clip().eval()
    if fmt == "bin":
        source = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(clip.state_dict(), source)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        source = tmp_path / "clip.safetensors"
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(source))
    elif fmt == "local-dir":
        source = f"local-dir:{save_local_dir(clip, tmp_path / 'clip', TINY.clip, True)}"
    else:
        source = tmp_path / "ViT-tiny.pt"
        torch.jit.save(_trace(clip), str(source))
    net = build_otseg(TINY, clip_weights=source)
    _assert_backbone_equals(net, clip)


def test_openai_archive_requires_quick_gelu(tmp_path):
    source = tmp_path / "ViT-tiny.pt"
    torch.jit.save(_trace(_reference_clip()), str(source))
    with pytest.raises(ValueError, match="QuickGELU"):
        load_clip_weights(build_clip(TINY.clip, False), source, quick_gelu=False)


def test_wrong_or_corrupt_clip_files_give_clear_errors(tmp_path):
    clip = build_clip(TINY.clip, True)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_clip_weights(clip, tmp_path / "missing.pt")
    broken = tmp_path / "broken.bin"
    torch.save(_reference_clip().state_dict(), broken)
    broken.write_bytes(broken.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_clip_weights(clip, broken)
    other = tmp_path / "other.bin"
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="does not match the CLIP architecture"):
        load_clip_weights(clip, other)


# --- our checkpoints and the paper's ---------------------------------------------------------------------------


def test_model_file_round_trip(tmp_path, text):
    torch.manual_seed(0)
    net = tiny().eval()
    path = save_model(net, tmp_path / "m.safetensors", meta={"classes": ["a", "b"]})
    loaded, meta = load_otseg(path)
    assert meta == {"classes": ["a", "b"]} and loaded.config == net.config
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images, text)["decoder"], net(images, text)["decoder"])


def test_trainable_only_file_needs_clip_weights(tmp_path):
    clip = _reference_clip()
    weights = tmp_path / "clip.bin"
    torch.save(clip.state_dict(), weights)
    net = build_otseg(TINY, clip_weights=weights)
    path = save_model(net, tmp_path / "small.safetensors", trainable_only=True)
    with pytest.raises(CheckpointError, match=r"only the trained weights.*--clip-weights"):
        load_otseg(path)
    loaded, _ = load_otseg(path, clip_weights=weights)
    torch.testing.assert_close(loaded.head.descriptor.q_proj.weight, net.head.descriptor.q_proj.weight)


def test_model_file_of_another_config_is_rejected(tmp_path):
    path = save_model(tiny(), tmp_path / "m.safetensors")
    other = tiny(num_prompt_tokens=3)
    from otseg.utils.io import read_state_dict

    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state(other, read_state_dict(path), str(path))


def _to_paper_keys(state):
    """Inverse of PAPER_KEY_MAP for the test: our keys -> the paper's."""
    out = {}
    for key, value in state.items():
        if key.startswith("image_encoder."):
            out["backbone." + key[len("image_encoder.") :]] = value
        elif key.startswith("head.descriptor.q_proj."):
            out["decode_head.q_proj." + key.split("q_proj.")[1]] = value
        elif key.startswith("head.decoder.layers."):
            out["decode_head.decoder_1.layers." + key[len("head.decoder.layers.") :]] = value
        else:
            out[key] = value
    return out


def test_synthetic_paper_checkpoint_loads_with_no_missing_or_unexpected_keys(tmp_path):
    torch.manual_seed(3)
    source = tiny()
    state = _to_paper_keys(source.state_dict())
    for i in range(TINY.decoder_layers):  # the unused modules the public code saves
        state[f"decode_head.decoder_1.layers.{i}.self_attn.in_proj_weight"] = torch.zeros(96, 32)
        state[f"decode_head.decoder_1.layers.{i}.norm1.weight"] = torch.ones(32)
    state["decode_head.loss_decode.criterion.empty_weight"] = torch.ones(4)
    path = tmp_path / "iter_20000.pth"
    torch.save({"meta": {"iter": 20000, "CLASSES": ("a", "b")}, "state_dict": state, "optimizer": {}}, path)
    target = tiny()
    report = load_paper_checkpoint(target, path)
    assert report["loaded"] == len(source.state_dict()) and len(report["ignored"]) == 2 * TINY.decoder_layers + 1
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    mapped, _, unknown = map_paper_state_dict({"decode_head.conv_seg.weight": torch.zeros(1)})
    assert unknown == ["decode_head.conv_seg.weight"] and not mapped
    assert PAPER_KEY_MAP


def test_paper_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "meta": Evil()}, path)
    with pytest.raises(ValueError, match="refusing to execute"):
        load_paper_checkpoint(tiny(), path)


def test_torchscript_archives_are_only_read_as_clip_weights(tmp_path):
    """A TorchScript archive is a program: model files and paper checkpoints never load one."""
    from otseg.utils.io import read_state_dict

    source = tmp_path / "archive.pt"
    torch.jit.save(_trace(_reference_clip()), str(source))
    with pytest.raises(ValueError, match="TorchScript archive"):
        read_state_dict(source)
    with pytest.raises(ValueError, match="TorchScript archive"):
        load_paper_checkpoint(tiny(), source)


def test_learnable_context_models_save_and_load(tmp_path):
    net = tiny(learnable_context=2)
    assert not any(k.startswith("learnable_context.encoder") for k in net.state_dict())
    loaded, _ = load_otseg(save_model(net, tmp_path / "coop.safetensors"))
    torch.testing.assert_close(loaded.learnable_context.context, net.learnable_context.context)


def test_class_embeddings_of_another_width_are_explained(model):
    with pytest.raises(ValueError, match="width 48"):
        model(torch.rand(1, 3, 64, 64) * 255, torch.randn(2, 3, 48))


def test_quick_gelu_architectures_and_mismatches():
    assert build_clip("ViT-B-16-quickgelu", True) is not None
    with pytest.raises(ValueError, match="quick_gelu"):
        build_clip("ViT-B-16-quickgelu", False)


def test_local_dir_records_its_activation(tmp_path):
    folder = save_local_dir(_reference_clip(), tmp_path / "clip", TINY.clip, quick_gelu=True)
    with pytest.raises(ValueError, match="quick_gelu"):
        load_clip_weights(build_clip(TINY.clip, False), f"local-dir:{folder}", quick_gelu=False)


def test_corrupt_safetensors_give_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "clip.safetensors"
    save_file({"w": torch.zeros(4)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_clip_weights(build_clip(TINY.clip, True), path)
