"""The fast inference path equals the plain computation, and the paper's FLOPs convention counts what it should.

The reference below is the computation as the public code (and this project before its fast path) writes it:
open_clip's own blocks over the whole token sequence ``[CLS, prompts, patches]``, every decoder layer in full,
both maps upsampled with ``F.interpolate`` before the ensemble, sigmoid and calibration out of place.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from otkit import multi_prompt_transport, unit_vectors
from otseg.build import load_otseg
from otseg.config import get_model_config
from otseg.engine.stats import model_stats, paper_convention_macs, unused_paper_parameters
from otseg.modeling.decoder import combine_layer_maps
from otseg.modeling.image_encoder import resize_positional_embedding
from otseg.predictor import InferenceSettings, OTSegPredictor, predict_probabilities

TINY = get_model_config("otseg-tiny")


def reference_encoder(encoder, images):
    """The prompted ViT with open_clip's blocks on the full sequence; prompts replaced before each deep block."""
    x = encoder.conv1(images)
    batch, width, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = resize_positional_embedding(encoder.positional_embedding, (h, w))
    cls = encoder.class_embedding + pos[0]
    if encoder.double_class_embedding:
        cls = cls + encoder.class_embedding
    x = encoder.ln_pre(torch.cat([cls.expand(batch, 1, width), x + pos[1:]], dim=1))
    t = encoder.num_tokens
    x = torch.cat([x[:, :1], encoder._prompts(encoder.prompt_embeddings, batch), x[:, 1:]], dim=1)
    for i, block in enumerate(encoder.transformer.resblocks):
        if 1 <= i <= encoder.deep_layers:
            x = torch.cat(
                [x[:, :1], encoder._prompts(encoder.deep_prompt_embeddings[i - 1 : i], batch), x[:, 1 + t :]], 1
            )
        x = block(x)
    x = encoder.ln_post(encoder.prompt_norm(x)) @ encoder.proj
    dense = x[:, 1 + t :].transpose(1, 2).reshape(batch, -1, h, w)
    return unit_vectors(dense, dim=1), unit_vectors(x[:, 0])


def reference_logits(model, images, text):
    """``{"decoder", "score"}`` at the input size; every decoder layer computes its outputs, as in the public code."""
    dense, global_embedding = reference_encoder(model.image_encoder, model.normalize(images))
    batch, _, h, w = dense.shape
    pixels = dense.flatten(2).transpose(1, 2)
    queries = model.head.descriptor(global_embedding, text)
    score = multi_prompt_transport(pixels, queries, options=model.head.sinkhorn).score.reshape(batch, -1, h, w)
    maps = []
    for layer in model.head.decoder.layers:
        queries, logits = layer(queries, pixels, need_output=True)
        maps.append(logits.reshape(batch, -1, h, w))
    size = images.shape[-2:]
    return {
        name: F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        for name, m in (("decoder", combine_layer_maps(maps)), ("score", score))
    }


def reference_probabilities(model, images, text, seen):
    out = reference_logits(model, images, text)
    prob = torch.sigmoid(0.5 * out["decoder"] + 0.5 * out["score"])
    return prob - model.seen_bias * seen.float().view(1, -1, 1, 1)


def tiny_model(**overrides):
    torch.manual_seed(0)
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True, overrides=overrides)
    with torch.no_grad():  # move every weight off its init, so that a wrong mapping shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"deep_prompt_layers": 0}, {"quick_gelu": False, "num_prompt_tokens": 5}],
    ids=["deep-prompts", "input-prompts-only", "gelu"],
)
def test_fast_forward_equals_the_full_sequence_computation(overrides):
    model = tiny_model(**overrides)
    images = torch.rand(2, 3, 64, 80) * 255
    text = F.normalize(torch.randn(5, TINY.num_prompts, 32), dim=-1)
    seen = torch.tensor([True, True, False, True, False])
    with torch.no_grad():
        ref = reference_logits(model, images, text)
        out = model(images, text)
        for name in ("decoder", "score"):
            torch.testing.assert_close(out[name], ref[name], rtol=0, atol=1e-5)
        expected = reference_probabilities(model, images, text, seen)
        torch.testing.assert_close(model.probabilities(out, seen), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.infer(images, text, seen), expected, rtol=0, atol=1e-5)


def test_predictor_paths_equal_the_reference_windows():
    model = tiny_model()
    images = torch.rand(1, 3, 70, 100) * 255
    text = F.normalize(torch.randn(4, TINY.num_prompts, 32), dim=-1)
    seen = torch.tensor([True, False, True, False])
    settings = InferenceSettings(short_side=64, crop=64, stride=40)
    resized = F.interpolate(images, size=(64, 91), mode="bilinear", align_corners=False)
    expected = torch.zeros(1, 4, 64, 91)
    count = torch.zeros(1, 1, 64, 91)
    with torch.no_grad():
        for y0, y1, x0, x1 in ((0, 64, 0, 64), (0, 64, 27, 91)):
            expected[..., y0:y1, x0:x1] += reference_probabilities(model, resized[..., y0:y1, x0:x1], text, seen)
            count[..., y0:y1, x0:x1] += 1
    expected = F.interpolate(expected / count, size=(70, 100), mode="bilinear", align_corners=False)
    fast = predict_probabilities(model, images, text, settings, seen)
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-5)
    predictor = OTSegPredictor(model, settings)
    predictor.text, predictor.seen = text, seen
    torch.testing.assert_close(predictor.predict_torch(images), expected, rtol=0, atol=1e-5)


def test_bf16_precision_stays_close_to_fp32():
    model = tiny_model()
    images = torch.rand(1, 3, 64, 64) * 255
    text = F.normalize(torch.randn(4, TINY.num_prompts, 32), dim=-1)
    fp32 = predict_probabilities(model, images, text, InferenceSettings(short_side=None, mode="whole"))
    bf16 = predict_probabilities(
        model, images, text, InferenceSettings(short_side=None, mode="whole", precision="bf16")
    )
    assert bf16.dtype == torch.float32
    assert float((bf16 - fp32).abs().max()) < 0.05
    with pytest.raises(ValueError, match="precision must be one of"):
        InferenceSettings(precision="fp16")


def test_compiled_encoder_gives_the_same_probabilities():
    model = tiny_model()
    images = torch.rand(1, 3, 64, 64) * 255
    text = F.normalize(torch.randn(4, TINY.num_prompts, 32), dim=-1)
    settings = InferenceSettings(short_side=None, mode="whole", compile=True)
    predictor = OTSegPredictor(model, settings)
    predictor.text = text
    expected = predict_probabilities(model, images, text, InferenceSettings(short_side=None, mode="whole"))
    torch.testing.assert_close(predictor.predict_torch(images), expected, rtol=0, atol=1e-5)
    assert list(model.state_dict()) == list(tiny_model().state_dict())  # the model itself is left as it was


def test_batched_predict_equals_one_at_a_time():
    model = tiny_model()
    predictor = OTSegPredictor(model, InferenceSettings(short_side=None, mode="whole"))
    predictor.set_classes(["red", "green", "blue"])
    images = [torch.rand(3, 48, 64) * 255, torch.rand(3, 48, 64) * 255, torch.rand(3, 40, 40) * 255]
    single = predictor.predict(images)
    batched = predictor.predict(images, batch_size=2)
    assert [a.shape for a in batched] == [(48, 64), (48, 64), (40, 40)]
    for a, b in zip(single, batched, strict=True):
        assert (a == b).mean() > 0.999  # float noise may flip a tie


def mmcv_rule_macs(model, images, text):
    """What mmcv's complexity counter reports: multiply-adds of modules whose type is exactly Linear or Conv2d."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if type(module) is nn.Linear:
            total += inputs[0].numel() * module.out_features
        elif type(module) is nn.Conv2d:
            total += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        reference_logits(model, images, text)
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("overrides", [{}, {"deep_prompt_layers": 0, "decoder_layers": 1}])
def test_paper_convention_counts_the_public_computation(overrides):
    model = tiny_model(**overrides)
    text = F.normalize(torch.randn(7, TINY.num_prompts, 32), dim=-1)
    expected = mmcv_rule_macs(model, torch.rand(1, 3, 64, 64) * 255, text)
    assert paper_convention_macs(model, 64, 7, TINY.num_prompts)["total"] == expected


def test_paper_figures_on_the_voc_configuration():
    model, _ = load_otseg("otseg-vit-b16", allow_random_clip=True)
    stats = model_stats(model, image_size=512, num_classes=20)
    assert abs(stats.paper_gflops - 61.9) <= 0.005 * 61.9  # the paper's 61.9 GFLOPs
    assert abs(stats.paper_trainable_params / 1e6 - 13.8) <= 0.005 * 13.8  # and 13.8M trainable parameters
    # 2 per multiply-add with attention: about three times the paper's number, both right in their convention
    assert 2.5 * stats.paper_gflops < stats.gflops < 3.5 * stats.paper_gflops
    assert unused_paper_parameters(model) == 3 * (4 * 512 * 512 + 6 * 512)
