"""`greenshift calibrate`: tables in the energy-table format, accepted by --energy-table, used by the report."""

from __future__ import annotations

import json

import pytest
import torch

from greenshift.cli import main
from greenshift.config import DSNNConfig
from greenshift.deploy.calibrate import IN_KERNEL, Calibration, calibrate
from greenshift.errors import ConfigError, MeasurementError
from greenshift.objectives import FakeMeter, load_energy_table, profile_model
from greenshift.train import build_model


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    return calibrate(rounds=3, threads=1)


def test_calibration_times_every_priced_operation(calibration):
    ns = calibration.ns
    assert set(ns["shift"]) == set(ns["int_add"]) == {8, 16, 32}
    assert all(v > 0 for entry in ns.values() for v in entry.values())
    widths = sorted(ns["shift"])
    assert [ns["shift"][w] for w in widths] == sorted(ns["shift"][w] for w in widths)  # table rule
    assert calibration.watts == 1.0 and "no meter" in calibration.power_source


def test_written_tables_are_accepted_as_energy_tables(calibration, tmp_path):
    energy, latency = calibration.write(tmp_path / "calibrated.json")
    assert latency.name == "calibrated.latency.json"
    table = load_energy_table(energy)
    ns_table = load_energy_table(latency)
    assert table.weight_memory == table.activation_memory == IN_KERNEL
    # Without a meter, 1 W: pJ = 1000 x ns for every entry.
    assert table.op_pj("shift", 8) == pytest.approx(1000 * ns_table.op_pj("shift", 8))
    assert table.op_pj("fp_mult", 32) == pytest.approx(1000 * calibration.ns["fp_mult"][32])
    model = build_model(DSNNConfig(shift_type="Q", weight_bits=4), "tiny_cnn", 10, 1)
    assert profile_model(model, (1, 8, 8), energy_table=table).total_energy_j > 0


def test_a_meter_sets_the_power():
    result = calibrate(rounds=3, threads=1, meter=FakeMeter(watts=7.0))
    assert result.watts == pytest.approx(7.0, rel=0.05) and "fake" in result.power_source
    assert Calibration(result.ns, 2.0, "x").energy_table()["fp_add_pj"]["32"] == pytest.approx(
        2000 * result.ns["fp_add"][32]
    )


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="rounds"):
        calibrate(rounds=1)
    with pytest.raises(ConfigError, match="watts"):
        calibrate(watts=0)


def test_an_unavailable_meter_is_a_measurement_error():
    with pytest.raises(MeasurementError, match="no counters"):
        calibrate(rounds=3, threads=1, meter=FakeMeter(unavailable_reason="no counters"))


def test_the_cli_writes_a_table_that_search_and_profile_accept(tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert (
        main(["calibrate", "--out", str(out), "--rounds", "3", "--threads", "1", "--watts", "5", "--json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["watts"] == 5.0 and printed["energy_table"] == str(out)
    assert main(["profile", "--backbone", "tiny_cnn", "--dataset", "digits", "--energy-table", str(out)]) == 0
    assert torch.get_num_threads() >= 1
