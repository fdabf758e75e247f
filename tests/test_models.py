"""rayda.models: shapes, embeddings, gradients, weight files, and a tiny overfit check."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rayda.models import ARCHS, build_segmenter

NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("small_torch")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("height, width", [(64, 128), (72, 100)])
def test_cpu_output_and_embedding_shapes(arch, height, width):
    model = build_segmenter(arch, NUM_CLASSES, size="cpu").eval()
    x = torch.rand(2, 3, height, width) * 2 - 1
    with torch.no_grad():
        logits = model(x)
        logits_too, embedding = model.forward_with_features(x)
        encoded = model.encode(x)
    assert logits.shape == (2, NUM_CLASSES, height, width)
    assert torch.equal(logits, logits_too)
    stride = model.embed_stride
    assert embedding.shape == (
        2, model.embed_channels, math.ceil(height / stride), math.ceil(width / stride))
    assert torch.equal(embedding, encoded)


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_gradients_reach_every_parameter(arch):
    model = build_segmenter(arch, NUM_CLASSES, size="cpu").train()
    logits, embedding = model.forward_with_features(torch.rand(2, 3, 64, 64) * 2 - 1)
    loss = F.cross_entropy(logits, torch.randint(0, NUM_CLASSES, (2, 64, 64)))
    (loss + embedding.mean()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


def test_full_deeplabv3plus_is_output_stride_16_with_aspp_6_12_18():
    model = build_segmenter("deeplabv3plus_mobilenetv2", 19).eval()
    with torch.no_grad():
        embedding = model.encode(torch.zeros(1, 3, 128, 128))
    assert embedding.shape == (1, 320, 8, 8)
    atrous = [m for m in model.aspp.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1]
    assert [m.dilation for m in atrous] == [(6, 6), (12, 12), (18, 18)]
    assert all(m.kernel_size == (3, 3) for m in atrous)
    assert model.low_level_proj[0].out_channels == 48


@pytest.mark.parametrize("wrap", [False, True])
def test_weights_round_trip(tmp_path, wrap):
    model = build_segmenter("deeplabv3plus_mobilenetv2", NUM_CLASSES, size="cpu").eval()
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()} if wrap else model.state_dict(), path)
    loaded = build_segmenter("deeplabv3plus_mobilenetv2", NUM_CLASSES, size="cpu",
                             weights=str(path)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_weights_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_segmenter("erfnet", NUM_CLASSES, size="cpu", weights=missing)
    other = tmp_path / "erfnet.pt"
    torch.save(build_segmenter("erfnet", NUM_CLASSES, size="cpu").state_dict(), other)
    with pytest.raises(ValueError, match="missing.*unexpected"):
        build_segmenter("deeplabv2_vgg16", NUM_CLASSES, size="cpu", weights=other)
    with pytest.raises(ValueError, match="wrong-shape"):
        build_segmenter("erfnet", NUM_CLASSES + 1, size="cpu", weights=other)


def test_argument_errors():
    with pytest.raises(ValueError, match="deeplabv3plus_mobilenetv2"):
        build_segmenter("unet", NUM_CLASSES)
    with pytest.raises(ValueError, match="size"):
        build_segmenter("erfnet", NUM_CLASSES, size="tiny")
    # Raised before any download is attempted.
    with pytest.raises(ValueError, match="ImageNet"):
        build_segmenter("fcn8s_vgg16", NUM_CLASSES, size="cpu", pretrained=True)
    with pytest.raises(ValueError, match="ImageNet"):
        build_segmenter("erfnet", NUM_CLASSES, size="cpu", pretrained=True)


def test_cpu_deeplabv3plus_overfits_one_image():
    model = build_segmenter("deeplabv3plus_mobilenetv2", 2, size="cpu").train()
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    target = torch.zeros(1, 64, 64, dtype=torch.long)
    target[:, :, 32:] = 1  # left half class 0, right half class 1
    image[:, :, :, 32:] += 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
