"""``evaluate`` on the embedded digits data: all objectives, no side effects, fallback, errors."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from greenshift.data import load_dataset
from greenshift.errors import ConfigError
from greenshift.models import get_model
from greenshift.objectives import OBJECTIVES, FakeMeter, evaluate, model_energy_j
from greenshift.objectives.evaluate import EvaluationResult
from greenshift.shift import convert_to_shift, shift_size_bits
from greenshift.train import validate

FAST = {
    "batch_size": 64,
    "num_batches": 1,
    "min_window_s": 0.05,
    "min_repeats": 2,
    "max_repeats": 3,
    "measure_idle": False,
    "latency_batch_size": 16,
    "latency_warmup": 1,
    "latency_repeats": 3,
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GREENSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield load_dataset("digits")
    finally:
        mp.undo()


def shift_model(digits) -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_model("tiny_cnn", num_classes=digits.num_classes, in_channels=digits.in_channels)
    return convert_to_shift(model, 2, shift_type="PS", weight_bits=4, act_integer_bits=8, act_fraction_bits=8)


def test_registry_lists_every_objective_with_units() -> None:
    assert set(OBJECTIVES) == {
        "loss",
        "energy_model_j",
        "energy_measured_j",
        "emissions_measured_kg",
        "latency_ms",
        "latency_ort_ms",
        "size_bits",
    }
    assert OBJECTIVES["energy_model_j"].deterministic and not OBJECTIVES["latency_ms"].deterministic
    assert OBJECTIVES["size_bits"].unit == "bit"


def test_all_objectives_and_no_side_effects(digits) -> None:
    model = shift_model(digits).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, accuracy_before = validate(model, digits)
    model.train()
    result = evaluate(model, digits, list(OBJECTIVES), meter=FakeMeter(watts=5.0), measure_options=FAST)
    assert isinstance(result, EvaluationResult) and list(result) == list(OBJECTIVES)
    assert all(math.isfinite(v) and v >= 0 for v in result.values())
    assert result["loss"] == pytest.approx(1 - result.details["accuracy"])
    assert result["energy_model_j"] == pytest.approx(model_energy_j(model, (1, 8, 8)))
    assert result["size_bits"] == shift_size_bits(model)
    assert result["energy_measured_j"] > 0 and result.details["energy_measured_j"]["meter"] == "fake"
    assert result.details["energy_measured_j"]["n"] >= 2
    assert result.details["latency_ms"]["batch_size"] == 16
    assert "energy_measured_fallback" not in result.details
    # Nothing about the model changed: parameters, buffers, mode, accuracy.
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert validate(model, digits)[1] == accuracy_before == result.details["accuracy"]


def test_unavailable_meter_falls_back_to_the_model_and_says_so(digits, caplog) -> None:
    model = shift_model(digits)
    with caplog.at_level(logging.WARNING, logger="greenshift.objectives"):
        result = evaluate(
            model,
            digits,
            ["energy_measured_j", "emissions_measured_kg"],
            meter=FakeMeter(unavailable_reason="meter unplugged"),
            measure_options=FAST,
        )
    assert result["energy_measured_j"] == pytest.approx(model_energy_j(model, (1, 8, 8)))
    assert result["emissions_measured_kg"] > 0
    assert "meter unplugged" in result.details["energy_measured_fallback"]
    assert result.details["energy_measured_j"]["method"] == "fallback: energy_model_j"
    assert "meter unplugged" in caplog.text


def test_zero_reading_also_falls_back(digits) -> None:
    result = evaluate(
        shift_model(digits),
        digits,
        ["energy_measured_j"],
        meter=FakeMeter(jitter=(-1.0,)),
        measure_options=FAST,
    )
    assert "implausible" in result.details["energy_measured_fallback"]
    assert result["energy_measured_j"] > 0


def test_unknown_objectives_and_meters_are_config_errors(digits) -> None:
    model = shift_model(digits)
    with pytest.raises(ConfigError, match=r"unknown objective.*'accuracy'.*valid: loss, energy_model_j"):
        evaluate(model, digits, ["loss", "accuracy"])
    with pytest.raises(ConfigError, match="no objectives"):
        evaluate(model, digits, [])
    with pytest.raises(ConfigError, match="valid: auto, codecarbon"):
        evaluate(model, digits, ["energy_measured_j"], meter="zeus", measure_options=FAST)
    with pytest.raises(ConfigError, match="unknown measure option"):
        evaluate(model, digits, ["loss"], measure_options={"windows": 2})


def test_energy_table_path_is_accepted(digits, tmp_path) -> None:
    from greenshift.objectives.energy_model import default_energy_table

    data = {**default_energy_table().to_dict(), "weight_memory": "dram"}
    path = tmp_path / "hw.json"
    path.write_text(__import__("json").dumps(data))
    model = shift_model(digits)
    default = evaluate(model, digits, ["energy_model_j"], device="cpu")
    dram = evaluate(model, digits, ["energy_model_j"], energy_table=path)
    assert dram["energy_model_j"] > default["energy_model_j"]
    assert "dram" in dram.details["energy_model_j"]["method"]
