"""ONNX deployment: integer weight formats, exact fixed-point activations in onnxruntime, agreement with
the simulated model, the float twin, a plain onnxruntime+numpy script, `evaluate` and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx

from greenshift.config import DSNNConfig
from greenshift.data import load_dataset
from greenshift.deploy.onnx import (
    activation_type,
    float32_integer_below,
    float_twin,
    predict,
    session,
    to_onnx_bytes,
    weight_format,
)
from greenshift.errors import ConfigError, ExportError
from greenshift.export import evaluate_onnx, export_model, to_onnx
from greenshift.objectives import evaluate
from greenshift.objectives.evaluate import check_objectives
from greenshift.shift import ShiftConv2d, ShiftLayer
from greenshift.train import build_model


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GREENSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield load_dataset("digits")


def _model(backbone: str = "tiny_cnn", **config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(DSNNConfig(**config), backbone, num_classes=10, in_channels=1)
    # Spread the batch-norm statistics so that activations cover the fixed-point range and its ends.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.05, 0.5)
    return model.eval()


def _shape(data) -> tuple[int, ...]:
    return tuple(data.split("test").images.shape[1:])


def _simulated(model, data, split="test") -> np.ndarray:
    with torch.no_grad():
        return torch.cat(
            [model(x) for x, _ in data.batches(split, 500, shuffle=False, augment=False)]
        ).numpy()


def _onnx_logits(model, data, split="test") -> np.ndarray:
    exported = to_onnx_bytes(model, _shape(data), mean=data.mean, std=data.std)
    return predict(session(exported.model_bytes), data.split(split).images)


# --- formats -----------------------------------------------------------------------------------


@given(
    st.integers(-127, 0),
    st.integers(0, 40),
    st.lists(st.tuples(st.sampled_from([-1, 0, 1]), st.integers(0, 40)), min_size=1, max_size=30),
)
def test_weight_format_is_exact_and_takes_the_narrowest_type(top, span, entries):
    sign = torch.tensor([s for s, _ in entries], dtype=torch.int8).reshape(1, -1)
    shift = torch.tensor([max(top - min(d, span), -127) for _, d in entries], dtype=torch.int8).reshape(1, -1)
    fmt = weight_format(sign, shift)
    nonzero = shift[sign != 0]
    true_span = int(nonzero.max() - nonzero.min()) if nonzero.numel() else 0
    assert fmt.span == true_span
    expected = "int8" if true_span <= 6 else "int16" if true_span <= 14 else "float32"
    assert fmt.type_name == expected
    decoded = fmt.values.to(torch.float64)
    if fmt.scale_exponents is not None:
        decoded = decoded * torch.exp2(fmt.scale_exponents.to(torch.float64))[:, None]
        assert int(fmt.values.abs().max()) <= 2 ** (8 if expected == "int8" else 16) // 4
    reference = sign.to(torch.float64) * torch.exp2(shift.to(torch.float64))
    assert torch.equal(decoded, reference)


def test_activation_types_follow_the_fixed_point_width():
    assert [activation_type(i, f) for i, f in ((4, 4), (3, 2), (8, 8), (6, 4), (16, 16), (1, 16))] == [
        "int8",
        "int8",
        "int16",
        "int16",
        "float32",
        "float32",
    ]
    assert float32_integer_below(10) == 1023.0
    assert float32_integer_below(31) == 2.0**31 - 128  # the largest float32 below 2**31


# --- agreement with the simulated model ---------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "config"),
    [
        (
            "tiny_cnn",
            {
                "shift_type": "Q",
                "weight_bits": 4,
                "activation_integer_bits": 4,
                "activation_fraction_bits": 4,
            },
        ),
        (
            "tiny_cnn",
            {
                "shift_type": "Q",
                "weight_bits": 3,
                "activation_integer_bits": 3,
                "activation_fraction_bits": 2,
            },
        ),
        (
            "tiny_cnn",
            {
                "shift_type": "PS",
                "weight_bits": 5,
                "activation_integer_bits": 8,
                "activation_fraction_bits": 8,
            },
        ),
        (
            "tiny_cnn",
            {
                "shift_type": "PS",
                "weight_bits": 8,
                "activation_integer_bits": 16,
                "activation_fraction_bits": 16,
            },
        ),
        (
            "tiny_resnet",
            {
                "shift_type": "Q",
                "weight_bits": 4,
                "activation_integer_bits": 4,
                "activation_fraction_bits": 4,
            },
        ),
        (
            "tiny_resnet",
            {
                "shift_type": "PS",
                "weight_bits": 5,
                "shift_depth": 3,
                "activation_integer_bits": 6,
                "activation_fraction_bits": 6,
            },
        ),
    ],
)
def test_onnxruntime_matches_the_simulated_deployed_model(digits, backbone, config):
    model = _model(backbone, **config)
    simulated = _simulated(model, digits)
    logits = _onnx_logits(model, digits)
    assert (logits.argmax(1) == simulated.argmax(1)).mean() >= 0.995
    # Weights and rounded activations are exact; only float32 summation order differs.
    assert np.abs(logits - simulated).max() <= 1e-3 * max(1.0, float(np.abs(simulated).max()))


def test_fixed_point_rounding_in_onnxruntime_is_the_simulation_s(digits):
    """A 1x1 shift convolution with weight 1 returns its rounded input: compare every value exactly."""
    for bits in ((3, 2), (4, 4), (6, 5), (8, 8), (16, 16)):
        first = torch.nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            first.weight.fill_(3.3)
            first.bias.fill_(-7.1)
        shift = ShiftConv2d(
            1,
            1,
            1,
            bias=False,
            shift_type="Q",
            weight_bits=4,
            act_integer_bits=bits[0],
            act_fraction_bits=bits[1],
        )
        with torch.no_grad():
            shift.weight.fill_(1.0)
        model = torch.nn.Sequential(first, shift, torch.nn.Flatten()).eval()
        images = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
        exported = to_onnx_bytes(model, (1, 8, 8), mean=(0.5,), std=(0.1,))
        got = predict(session(exported.model_bytes), images)
        scale = 1.0 / (255.0 * torch.tensor([0.1]))
        with torch.no_grad():
            expected = model(
                images.to(torch.float32) * scale + (-torch.tensor([0.5]) / torch.tensor([0.1]))
            ).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=str(bits))


def test_the_float_twin_has_the_decoded_weights_and_no_rounding(digits):
    model = _model(shift_type="Q", weight_bits=4, activation_integer_bits=4, activation_fraction_bits=4)
    twin = float_twin(model)
    assert not any(isinstance(m, ShiftLayer) for m in twin.modules())
    shifted = [m for m in model.modules() if isinstance(m, ShiftLayer)]
    plain = [m for m in twin.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer, other in zip(shifted, plain, strict=True):
        assert torch.equal(other.weight, layer.encode().decode())
    exported = to_onnx_bytes(twin, _shape(digits), mean=digits.mean, std=digits.std)
    kinds = {n.op_type for n in onnx.load_from_string(exported.model_bytes).graph.node}
    assert "QuantizeLinear" not in kinds
    logits = predict(session(exported.model_bytes), digits.split("test").images)
    np.testing.assert_allclose(logits, _simulated(twin, digits), rtol=1e-4, atol=1e-4)


def test_the_graph_holds_integer_weights_and_quantised_activations(digits):
    model = _model(shift_type="Q", weight_bits=4, activation_integer_bits=4, activation_fraction_bits=4)
    exported = to_onnx_bytes(
        model, _shape(digits), mean=digits.mean, std=digits.std, metadata={"dataset": "digits"}
    )
    proto = onnx.load_from_string(exported.model_bytes)
    onnx.checker.check_model(proto, full_check=True)
    kinds = [n.op_type for n in proto.graph.node]
    assert kinds.count("QuantizeLinear") == 3  # one per shift layer input
    weights = [
        onnx.numpy_helper.to_array(a.t)
        for n in proto.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value" and a.t.data_type == onnx.TensorProto.INT8 and len(a.t.dims) >= 2
    ]
    assert len(weights) == 3
    for w in weights:
        magnitudes = np.unique(np.abs(w[w != 0]))
        assert np.all(np.log2(magnitudes) == np.round(np.log2(magnitudes)))  # powers of two
    assert exported.summary() == {"int8": 3}
    assert {e.key: e.value for e in proto.metadata_props}["dataset"] == "digits"


def test_unsupported_padding_is_a_clear_error():
    model = torch.nn.Sequential(
        ShiftConv2d(1, 2, 3, padding=1, padding_mode="reflect", shift_type="Q", weight_bits=4),
        torch.nn.Flatten(),
    )
    with pytest.raises(ExportError, match="zero padding"):
        to_onnx_bytes(model, (1, 8, 8), mean=(0.0,), std=(1.0,))


def test_a_missing_onnxruntime_is_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"greenshift\[deploy\]"):
        check_objectives(["loss", "latency_ort_ms"])


# --- files, plain-Python deployment, evaluate ----------------------------------------------------


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    config = DSNNConfig(shift_type="Q", weight_bits=4, activation_integer_bits=4, activation_fraction_bits=4)
    model = _model(**config.to_dict())
    export_model(
        model,
        backbone="tiny_cnn",
        config=config,
        num_classes=10,
        in_channels=1,
        image_size=digits.image_size,
        mean=digits.mean,
        std=digits.std,
        dataset="digits",
        objectives={"loss": 0.5},
        out=folder / "model.gsx",
    )
    info = to_onnx(folder / "model.gsx", folder / "model.onnx")
    return model, info


def test_to_onnx_writes_the_model_its_float_twin_and_the_agreement(exported, digits):
    model, info = exported
    assert info.path.is_file() and info.float_path is not None and info.float_path.name == "model.float.onnx"
    agreement = info.agreement
    assert agreement is not None and agreement.n == len(digits.split("test"))
    assert agreement.agreement >= 0.995 and agreement.max_logit_diff < 1e-3
    labels = digits.split("test").labels.numpy()
    assert agreement.accuracy_simulated == float((_simulated(model, digits).argmax(1) == labels).mean())


PLAIN_SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort

model, images, out = sys.argv[1:]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
logits = sess.run(None, {"images": np.load(images)})[0]
np.save(out, logits)
assert not {"torch", "greenshift"} & set(sys.modules), "only onnxruntime and numpy may be loaded"
"""


def run_plain_script(model_path, images: np.ndarray, folder) -> np.ndarray:
    """Logits of ``model_path`` from a subprocess that imports only onnxruntime and numpy."""
    np.save(folder / "images.npy", images)
    script = folder / "deploy.py"
    script.write_text(PLAIN_SCRIPT)
    out = folder / "out.npy"
    command = [sys.executable, str(script), str(model_path), str(folder / "images.npy"), str(out)]
    subprocess.run(command, check=True, timeout=120)
    return np.load(out)


def test_a_script_with_only_onnxruntime_and_numpy_runs_the_model(exported, digits, tmp_path):
    model, info = exported
    logits = run_plain_script(info.path, digits.split("test").images.numpy(), tmp_path)
    simulated = _simulated(model, digits)
    assert (logits.argmax(1) == simulated.argmax(1)).mean() >= 0.995
    np.testing.assert_allclose(logits, simulated, atol=1e-3)


def test_evaluate_onnx_reports_accuracy_and_latency_next_to_the_float_twin(exported):
    _, info = exported
    result = evaluate_onnx(info.path, split="test", repeats=3)
    assert result["dataset"] == "digits" and result["n"] == info.agreement.n
    assert result["model"]["accuracy"] == info.agreement.accuracy_onnx
    assert result["float"]["path"] == str(info.float_path)
    for key in ("model", "float"):
        assert set(result[key]["latency"]) == {"1", "64"}
        assert all(v["median_ms"] > 0 for v in result[key]["latency"].values())
    assert set(result["speedup"]) == {"1", "64"}


def test_evaluate_onnx_refuses_a_foreign_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a readable ONNX"):
        evaluate_onnx(bad)


def test_latency_ort_ms_is_an_objective(digits):
    model = _model(shift_type="Q", weight_bits=4, activation_integer_bits=4, activation_fraction_bits=4)
    result = evaluate(model, digits, ["loss", "latency_ort_ms"], measure_options={"latency_repeats": 3})
    assert result["latency_ort_ms"] > 0
    details = result.details["latency_ort_ms"]
    assert details["batch_size"] == 64 and details["repeats"] == 3 and details["weight_types"] == {"int8": 3}
    assert json.dumps(details)


# --- a search with latency_ort_ms, its front member exported and evaluated through the CLI -------


def test_search_with_latency_ort_ms_then_export_and_evaluate_a_front_member(digits, tmp_path, capsys):
    from greenshift.cli import main
    from greenshift.search import DSNNSearch, SearchSettings

    settings = SearchSettings(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(tmp_path / "run"),
        objectives=("loss", "energy_model_j", "latency_ort_ms"),
        trials=2,
        min_epochs=1,
        max_epochs=1,
        keep_models="all",
        device="cpu",
        seed=0,
    )
    result = DSNNSearch(settings).run()
    assert result.pareto and all(t.objectives["latency_ort_ms"] > 0 for t in result.completed)
    member = result.pareto[0].trial_id
    out = tmp_path / "front.onnx"
    code = main(
        [
            "export",
            str(tmp_path / "run"),
            "--trial",
            str(member),
            "--out",
            str(out),
            "--format",
            "onnx",
            "--json",
        ]
    )
    exported = json.loads(capsys.readouterr().out)
    assert code == 0 and exported["path"] == str(out) and exported["agreement"]["agreement"] >= 0.995
    assert (tmp_path / "front.float.onnx").is_file()
    # The front member in plain onnxruntime + numpy gives exactly the logits of an onnxruntime session with
    # the same (default) options. greenshift's own session dequantises weights once at load: its sums run
    # in another order, which can move a fixed-point activation by one step, so there only the
    # predictions are compared, where the two best logits are not within such a step of each other.
    images = digits.split("test").images.numpy()
    logits = run_plain_script(out, images, tmp_path)
    np.testing.assert_allclose(logits, predict(session(out.read_bytes(), fast=False), images), atol=1e-6)
    fast = predict(session(out.read_bytes()), images)
    top_two = np.sort(logits, axis=1)[:, -2:]
    decided = (top_two[:, 1] - top_two[:, 0]) > 0.01  # a few activation steps
    assert decided.mean() > 0.3  # not vacuous
    assert (logits.argmax(1) == fast.argmax(1))[decided].all()
    labels = digits.split("test").labels.numpy()
    assert float((fast.argmax(1) == labels).mean()) == exported["agreement"]["accuracy_onnx"]
    code = main(["evaluate", str(out), "--split", "test", "--repeats", "2", "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["model"]["accuracy"] == exported["agreement"]["accuracy_onnx"]
    assert scores["float"] is not None and set(scores["speedup"]) == {"1", "64"}
