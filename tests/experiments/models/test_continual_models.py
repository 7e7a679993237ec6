"""Continual models: the reduced ResNet-18's parameter count worked out by hand, shapes, the logit mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.models.continual import (CONTINUAL_MODEL_NAMES, build_continual_model, mask_logits,
                                          task_class_mask)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reduced_resnet18_count(num_classes: int, nf: int = 20) -> int:
    """Counted by hand: 3x3 convolutions without bias, BatchNorm's weight and bias, 1x1 projections where
    the width changes, a linear head on 8 nf features."""
    def conv(c_in, c_out, k=3):
        return c_in * c_out * k * k

    def block(c_in, c_out):
        projection = conv(c_in, c_out, 1) + 2 * c_out if c_in != c_out else 0
        return conv(c_in, c_out) + 2 * c_out + conv(c_out, c_out) + 2 * c_out + projection

    stem = conv(3, nf) + 2 * nf
    widths = [nf, nf, 2 * nf, 4 * nf, 8 * nf]
    stages = sum(block(widths[s], widths[s + 1]) + block(widths[s + 1], widths[s + 1]) for s in range(4))
    return stem + stages + 8 * nf * num_classes + num_classes


def test_reduced_resnet18_parameter_count():
    assert reduced_resnet18_count(100) == 1_109_240  # the "1.1M" GEM quotes for CIFAR-100
    for num_classes in (10, 50, 200):
        model = build_continual_model("reduced_resnet18", num_classes)
        assert parameter_count(model) == reduced_resnet18_count(num_classes)
    widths = [m.out_channels for m in build_continual_model("reduced_resnet18", 10).modules()
              if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert widths == [20] + [20] * 4 + [40] * 4 + [80] * 4 + [160] * 4  # stem, then two convs x two blocks


@pytest.mark.parametrize("name,shape", [("reduced_resnet18", (3, 32, 32)), ("reduced_resnet18", (3, 64, 64)),
                                        ("mlp", (3, 32, 32)), ("mlp", (3, 8, 8))])
def test_forward_gives_one_logit_per_class(name, shape):
    model = build_continual_model(name, num_classes=7, image_shape=shape).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_mlp_layers():
    model = build_continual_model("mlp", 10, image_shape=(3, 8, 8), hidden_sizes=[50, 20])
    assert parameter_count(model) == (192 * 50 + 50) + (50 * 20 + 20) + (20 * 10 + 10)


def test_mask_keeps_each_items_own_task_classes():
    mask = task_class_mask([(0, 1), (2, 3), (4, 5)], num_classes=6)
    logits = torch.arange(18, dtype=torch.float32).view(3, 6).requires_grad_()
    masked = mask_logits(logits, torch.tensor([2, 0, 1]), mask)
    inf = float("-inf")
    expected = torch.tensor([[inf, inf, inf, inf, 4.0, 5.0],
                             [6.0, 7.0, inf, inf, inf, inf],
                             [inf, inf, 14.0, 15.0, inf, inf]])
    torch.testing.assert_close(masked, expected)
    labels = torch.tensor([5, 0, 2])
    loss = nn.functional.cross_entropy(masked, labels, reduction="sum")
    # Cross-entropy over the task's own two logits, written out: -log softmax of the label's logit.
    by_hand = sum(-torch.log_softmax(logits[b, list(pair)], 0)[list(pair).index(int(labels[b]))]
                  for b, pair in enumerate([(4, 5), (0, 1), (2, 3)]))
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    assert (logits.grad[expected == inf] == 0).all() and (logits.grad[expected != inf] != 0).all()
    assert masked.argmax(1).tolist() == [5, 1, 3]


def test_unknown_model_and_option_are_refused():
    with pytest.raises(ValueError, match="Unknown model 'resnet18'.*" + ", ".join(CONTINUAL_MODEL_NAMES)):
        build_continual_model("resnet18", num_classes=10)
    with pytest.raises(ValueError, match=r"'mlp' does not take option\(s\) nf. It takes: hidden_sizes"):
        build_continual_model("mlp", num_classes=10, nf=20)


CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "online_learning" / "model"


def test_continual_model_configs_build_their_models():
    for name in CONTINUAL_MODEL_NAMES:
        config = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert config.name == name
        model = build_continual_model(**config, num_classes=3).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
