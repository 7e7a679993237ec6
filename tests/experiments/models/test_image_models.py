"""Image models: published parameter counts, output shapes, the CIFAR stem, no BatchNorm in small_cnn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.models.images import IMAGE_MODEL_NAMES, build_image_model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Widely quoted figures: kuangliu/pytorch-cifar ResNet18/34 (10 classes), WRN-28-10's 36.5M (Zagoruyko &
# Komodakis), and timm's ImageNet models (efficientnet_b0 5.29M, resnet50 25.56M, 1000 classes).
@pytest.mark.parametrize("name,num_classes,count", [
    ("resnet18", 10, 11_173_962),
    ("resnet34", 10, 21_282_122),
    ("wrn28_10", 10, 36_479_194),
    ("efficientnet_b0", 1000, 5_288_548),
    ("resnet50", 1000, 25_557_032),
])
def test_parameter_counts_match_the_published_figures(name, num_classes, count):
    assert parameter_count(build_image_model(name, num_classes)) == count


@pytest.mark.parametrize("name,size", [
    ("resnet18", 32), ("resnet34", 32), ("wrn28_10", 32), ("small_cnn", 32),
    ("efficientnet_b0", 64), ("resnet50", 64),
])
def test_forward_gives_one_logit_per_class(name, size):
    model = build_image_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_cifar_resnet_keeps_32x32_down_to_4x4():
    model = build_image_model("resnet18", num_classes=10).eval()
    shapes = []
    model.layer4.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    # The ImageNet stem (stride-2 conv, max-pool) would leave 1x1 here; the CIFAR stem divides by 8 only.
    assert shapes == [torch.Size([1, 512, 4, 4])]


def test_small_cnn_has_no_normalisation_layers():
    model = build_image_model("small_cnn", num_classes=10)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in model.modules())


def test_wrn_dropout_acts_in_training_only():
    model = build_image_model("wrn28_10", num_classes=10, dropout=0.3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)


def test_unknown_model_and_option_are_refused():
    with pytest.raises(ValueError, match="Unknown model 'vgg16'.*" + ", ".join(IMAGE_MODEL_NAMES)):
        build_image_model("vgg16", num_classes=10)
    with pytest.raises(ValueError, match=r"'resnet18' does not take option\(s\) dropout. It takes: no opt"):
        build_image_model("resnet18", num_classes=10, dropout=0.1)


CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_every_model_config_builds_its_model():
    # Each runner has its own model group (configs/<runner>/model/); each file builds with that runner's builder.
    from experiments.models.continual import CONTINUAL_MODEL_NAMES, build_continual_model
    from experiments.models.language import LANGUAGE_MODEL_NAMES, build_language_model

    images = torch.randn(2, 3, 32, 32)

    def image_outputs(model):
        return model.eval()(images).shape

    def language_outputs(model):
        if hasattr(model, "initial_hidden"):  # recurrent: (time, batch) tokens and a carried state
            return model(torch.zeros(4, 2, dtype=torch.long), model.initial_hidden(2))[0].shape
        return model(torch.zeros(2, 4, dtype=torch.long)).transpose(0, 1).shape  # (batch, time) windows

    builders = {**{("image_classification", n): (lambda c: build_image_model(**c, num_classes=3), image_outputs,
                                                 (2, 3)) for n in IMAGE_MODEL_NAMES},
                **{("online_learning", n): (lambda c: build_continual_model(**c, num_classes=3), image_outputs,
                                            (2, 3)) for n in CONTINUAL_MODEL_NAMES},
                **{("language_modeling", n): (lambda c: build_language_model(**c, vocab_size=3),
                                              language_outputs, (4, 2, 3)) for n in LANGUAGE_MODEL_NAMES}}
    files = {(path.parent.parent.name, path.stem): OmegaConf.load(path) for path in CONFIGS.glob("*/model/*.yaml")}
    assert set(files) == set(builders)
    for (runner, stem), config in files.items():
        assert config.name == stem
        build, outputs, expected = builders[runner, stem]
        with torch.no_grad():
            assert tuple(outputs(build(config))) == expected, stem  # one score per class (or word)
