"""Backbone registry and models: shapes, gradients, layer order and counts, parameter budgets."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greenshift.errors import ConfigError, GreenshiftError, ModelError
from greenshift.models import get_model, list_models, model_info, register_model
from greenshift.models import registry as registry_module
from greenshift.models.resnet import CifarResNet, PadShortcut
from greenshift.shift import ShiftLayer, convert_to_shift, count_shiftable_layers

# name -> (Conv2d count, Linear count, exact parameters for 10 classes / 3 channels,
#          published or design figure, relative tolerance against that figure)
EXPECTED: dict[str, tuple[int, int, int, float, float]] = {
    "resnet20": (19, 1, 269_722, 0.27e6, 0.01),
    "resnet32": (31, 1, 464_154, 0.46e6, 0.01),
    "resnet44": (43, 1, 658_586, 0.66e6, 0.01),
    "resnet56": (55, 1, 853_018, 0.85e6, 0.01),
    # ImageNet MobileNetV2 (3.50 M) with a 10-class instead of a 1000-class classifier.
    "mobilenetv2": (52, 1, 2_236_682, 2.24e6, 0.02),
    # 6.2 M is the usual figure with conv biases; ours sit in batch norm instead.
    "googlenet": (64, 1, 6_158_346, 6.2e6, 0.02),
    "vgg19": (16, 1, 20_035_018, 20.0e6, 0.01),
    "small_cnn": (3, 1, 24_346, 24_346, 0.0),
    "tiny_cnn": (2, 1, 914, 914, 0.0),
    "tiny_resnet": (7, 1, 5_006, 5_006, 0.0),
}
HEAVY = {"googlenet", "vgg19", "mobilenetv2"}
MODELS = list_models()
SHIFTABLE = (nn.Conv2d, nn.Linear)


@functools.cache
def _shared(name: str) -> nn.Module:
    """One eval-mode instance per model for tests that only read (saves rebuilding 20 M parameters)."""
    return get_model(name).eval()


def _shiftable_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, SHIFTABLE)]


def test_expected_table_covers_the_whole_registry() -> None:
    # A newly registered model must come with its recorded layer and parameter counts.
    assert sorted(EXPECTED) == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_forward_gives_finite_logits_of_the_right_shape(name: str) -> None:
    model = get_model(name, num_classes=7)
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = get_model(name, num_classes=5)
    loss = F.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.tensor([1, 4]))
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name}.{param_name} has an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_one_input_channel(name: str) -> None:
    model = get_model(name, num_classes=3, in_channels=1)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_execution_order_equals_registration_order(name: str) -> None:
    model = _shared(name)
    executed: list[str] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, n=module_name: executed.append(n))
        for module_name, module in model.named_modules()
        if isinstance(module, SHIFTABLE)
    ]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 16, 16))
    finally:
        for handle in handles:
            handle.remove()
    assert executed == _shiftable_names(model)


@pytest.mark.parametrize("name", MODELS)
def test_shiftable_layer_counts(name: str) -> None:
    convs, linears, *_ = EXPECTED[name]
    model = _shared(name)
    modules = [m for m in model.modules() if isinstance(m, SHIFTABLE)]
    assert sum(isinstance(m, nn.Conv2d) for m in modules) == convs
    assert sum(isinstance(m, nn.Linear) for m in modules) == linears
    # The classifier is the last shiftable layer: shift_depth=1 converts exactly it.
    assert isinstance(modules[-1], nn.Linear)
    assert modules[-1].out_features == 10


@pytest.mark.parametrize("name", MODELS)
def test_count_agrees_with_shift_package(name: str) -> None:
    convs, linears, *_ = EXPECTED[name]
    assert count_shiftable_layers(_shared(name)) == convs + linears


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_resnet", "small_cnn", "resnet20"])
def test_fully_shifted_model_still_trains_and_keeps_its_order(name: str) -> None:
    model = get_model(name)
    depth = count_shiftable_layers(model)
    convert_to_shift(model, depth, shift_type="PS")
    layers = [m for m in model.modules() if isinstance(m, SHIFTABLE)]
    assert len(layers) == depth and all(isinstance(m, ShiftLayer) for m in layers)
    executed: list[nn.Module] = []
    for module in layers:
        module.register_forward_hook(lambda m, _i, _o: executed.append(m))
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert executed == layers


def test_shift_depth_one_converts_exactly_the_classifier() -> None:
    model = convert_to_shift(get_model("resnet20"), 1, convert_all_linear=False)
    shifted = [n for n, m in model.named_modules() if isinstance(m, ShiftLayer)]
    assert shifted == ["fc"]


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts(name: str) -> None:
    _, _, exact, figure, tolerance = EXPECTED[name]
    total = sum(p.numel() for p in _shared(name).parameters())
    assert total == exact
    assert abs(total - figure) <= tolerance * figure


@pytest.mark.parametrize("size", [16, 28, 32, 64])
@pytest.mark.parametrize("name", MODELS)
def test_any_input_size(name: str, size: int) -> None:
    if name in HEAVY:
        with torch.no_grad():
            out = _shared(name)(torch.randn(1, 3, size, size))
        assert out.shape == (1, 10)
    else:
        # Training mode with batch 2 also checks that batch norm sees more than one value.
        out = get_model(name)(torch.randn(2, 3, size, size))
        assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_mobilenetv2_has_one_depthwise_convolution_per_block() -> None:
    convs = [m for m in _shared("mobilenetv2").modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 17
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_googlenet_branches_run_in_registration_order() -> None:
    names = [n for n in _shiftable_names(_shared("googlenet")) if n.startswith("inception.a3.")]
    branches = [n.split(".")[2] for n in names]
    assert branches == ["branch1", "branch2", "branch2", "branch3", "branch3", "branch3", "branch4"]


def test_models_are_fresh_instances() -> None:
    first, second = get_model("tiny_cnn"), get_model("tiny_cnn")
    assert first is not second
    assert all(
        a.data_ptr() != b.data_ptr() for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    shortcut = PadShortcut(4, 8, stride=2)
    assert not list(shortcut.parameters())
    x = torch.randn(2, 4, 7, 7)
    out = shortcut(x)
    # Odd sizes round up, matching a padded stride-2 3x3 convolution.
    assert out.shape == (2, 8, 4, 4)
    assert torch.equal(out[:, 2:6], x[:, :, ::2, ::2])
    assert not out[:, :2].any() and not out[:, 6:].any()
    with pytest.raises(ConfigError):
        PadShortcut(8, 4, stride=1)


@pytest.mark.parametrize("depth", [0, 7, 19, 21])
def test_resnet_rejects_depths_not_6n_plus_2(depth: int) -> None:
    with pytest.raises(ConfigError, match="6n\\+2"):
        CifarResNet(depth)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ModelError) as caught:
        get_model("resnet2")
    message = str(caught.value)
    assert "did you mean 'resnet20'" in message
    assert "Available models:" in message and "vgg19" in message
    assert isinstance(caught.value, GreenshiftError) and isinstance(caught.value, KeyError)


def test_unknown_name_without_close_match_lists_the_names() -> None:
    with pytest.raises(ModelError) as caught:
        model_info("transformer")
    message = str(caught.value)
    assert "did you mean" not in message
    assert ", ".join(MODELS) in message


def test_suggestions_ignore_case() -> None:
    with pytest.raises(ModelError, match="did you mean 'vgg19'"):
        get_model("VGG19")


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": "3"}, "in_channels"),
    ],
)
def test_invalid_sizes_raise_config_error(kwargs: dict[str, object], label: str) -> None:
    with pytest.raises(ConfigError, match=label):
        get_model("tiny_cnn", **kwargs)  # type: ignore[arg-type]


def test_list_models_filters_with_shell_patterns() -> None:
    assert sorted(MODELS) == MODELS
    assert list_models("resnet*") == ["resnet20", "resnet32", "resnet44", "resnet56"]
    assert list_models("tiny_*") == ["tiny_cnn", "tiny_resnet"]
    assert list_models("*net*") == [
        "googlenet",
        "mobilenetv2",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "tiny_resnet",
    ]
    assert list_models("RESNET*") == []
    assert list_models("nothing*") == []
    assert list_models("resnet20") == ["resnet20"]


def test_list_models_can_hide_tiny_variants() -> None:
    visible = list_models(include_tiny=False)
    assert "tiny_cnn" not in visible and "tiny_resnet" not in visible
    assert {"resnet20", "mobilenetv2", "googlenet", "vgg19", "small_cnn"} <= set(visible)


def test_model_info() -> None:
    info = model_info("resnet20")
    assert info.name == "resnet20" and not info.tiny and "ResNet" in info.description
    assert model_info("tiny_resnet").tiny
    assert model_info("tiny_cnn").tiny
    assert all(model_info(name).description for name in MODELS)


def test_register_model_adds_and_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy keeps the real registry untouched by this test.
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("linear_probe", description="a flat linear layer", tiny=True)
    def linear_probe(num_classes: int, in_channels: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    assert "linear_probe" in list_models()
    assert model_info("linear_probe").tiny
    assert get_model("linear_probe", num_classes=4)(torch.randn(2, 1, 4, 4)).shape == (2, 4)
    with pytest.raises(ModelError, match="already registered"):
        register_model("linear_probe", description="again")(linear_probe)
    with pytest.raises(ModelError, match="lower case"):
        register_model("Probe", description="capitalised")
    with pytest.raises(ModelError, match="description"):
        register_model("probe", description=" ")
