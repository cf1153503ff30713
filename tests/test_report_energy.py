"""Modelled next to measured energy: trust maths, re-measurement from kept models, cache, report wiring."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from greenshift.config import DSNNConfig
from greenshift.objectives import FakeMeter, profile_model
from greenshift.objectives.energy_model import default_energy_table
from greenshift.report import (
    add_crosscheck,
    energy_crosscheck,
    load_report,
    remeasure,
    report_json,
    write_report,
)
from greenshift.report.crosscheck import trust_statistics
from greenshift.report.energy import CACHE_PATH, NO_KEPT_MODEL
from greenshift.store import RunStore, TrialStatus
from greenshift.train import build_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "screenshot_report.py"
# Short readings and no idle window: a re-measurement takes a fraction of a second.
FAST = {
    "batch_size": 16,
    "num_batches": 1,
    "warmup_passes": 0,
    "min_window_s": 0.01,
    "min_repeats": 2,
    "max_repeats": 3,
    "measure_idle": False,
}
# digits: 1 channel of 8x8, 10 classes; tiny_cnn has 3 shiftable layers.
SHAPE = (1, 8, 8)
CONFIGS = [
    {"optimizer": "sgd", "lr": 0.1, "shift_depth": 0, "weight_bits": 5},  # the default
    {"optimizer": "adam", "lr": 0.01, "shift_depth": 1, "weight_bits": 5},
    {"optimizer": "adam", "lr": 0.01, "shift_depth": 2, "weight_bits": 4},
    {"optimizer": "sgd", "lr": 0.05, "shift_depth": 3, "weight_bits": 3},  # no kept model
]


def fake_meter() -> FakeMeter:
    return FakeMeter(watts=10.0, jitter=(0.02, -0.02, 0.01))


def modelled(config: dict[str, Any]) -> float:
    model = build_model(DSNNConfig.from_dict(config), "tiny_cnn", 10, 1)
    return profile_model(model, SHAPE).total_energy_j


def make_run(
    run_dir: Path,
    objectives: list[str],
    *,
    measured_metrics: dict[str, Any] | None = None,
    fallback: str | None = None,
) -> Path:
    """A run directory as the search leaves it: 4 configurations on the front, 3 with kept models.

    The models are untrained (energy does not depend on the weights), saved like
    ``greenshift.search.trial`` saves them. Losses rise as the other objective falls (more shifted
    layers at fewer bits), so all four are on the front.
    """
    identity = {
        "dataset": "digits",
        "backbone": "tiny_cnn",
        "objectives": objectives,
        "max_epochs": 1,
        "image_size": None,
        "split_seed": 0,
        "fixed": {},
    }
    info = {"settings": {"device": "cpu", "energy_table": None, "data_dir": None}}
    with RunStore.create(run_dir, identity=identity, info=info) as store:
        for i, config in enumerate(CONFIGS):
            energy = modelled(config)
            values = {"loss": 0.2 + 0.1 * i, "energy_model_j": energy, "size_bits": 1000.0 * (4 - i)}
            values["energy_measured_j"] = 1e-3 * (4 - i)
            metrics: dict[str, Any] = {}
            if "energy_measured_j" in objectives:
                metrics["energy_measured_j"] = measured_metrics or {}
                if fallback and i == 1:
                    metrics["energy_measured_fallback"] = fallback
            trial_id = store.start_trial(config, 1, 0, is_default=i == 0)
            checkpoint = None
            if i < 3:
                torch.manual_seed(i)
                model = build_model(DSNNConfig.from_dict(config), "tiny_cnn", 10, 1)
                path = run_dir / "checkpoints" / f"model-{trial_id}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                payload = {
                    "state_dict": model.state_dict(),
                    "config": DSNNConfig.from_dict(config).to_dict(),
                    "backbone": "tiny_cnn",
                    "dataset": "digits",
                    "budget_epochs": 1,
                    "seed": 0,
                    "objectives": {},
                }
                torch.save(payload, path)
                checkpoint = path.relative_to(run_dir)
            store.finish_trial(
                trial_id,
                TrialStatus.OK,
                objectives={name: values[name] for name in objectives},
                metrics=metrics,
                checkpoint=checkpoint,
            )
    return run_dir


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENSHIFT_CACHE", str(tmp_path_factory.mktemp("data-cache")))
        yield


@pytest.fixture
def run(tmp_path, cache_env) -> Path:
    return make_run(tmp_path / "run", ["loss", "energy_model_j"])


# ------------------------------------------------------------------------------------------ trust maths


def test_proportional_values_give_rho_one_exact_k_and_no_error() -> None:
    modelled_j = [1e-8, 2e-8, 5e-8, 3e-7]
    trust = trust_statistics(modelled_j, [4e4 * m for m in modelled_j], meter="fake")
    assert trust.n == 4
    assert trust.spearman_rho == pytest.approx(1.0)
    assert trust.scale_k == pytest.approx(4e4, rel=1e-12)
    assert trust.median_relative_error == pytest.approx(0.0, abs=1e-12)
    assert "ρ = 1.00" in trust.statement and "nearly the same order" in trust.statement
    assert "k = 4e+04" in trust.statement and "median error is 0 %" in trust.statement
    assert "float multiplications" in trust.statement


def test_k_is_fitted_in_log_space_and_the_error_is_the_median() -> None:
    trust = trust_statistics([1.0, 2.0, 4.0], [2.0, 2.0, 8.0])
    k = 2 ** (2 / 3)  # geometric mean of the ratios 2, 1, 2
    assert trust.scale_k == pytest.approx(k)
    errors = sorted([abs(k - 2) / 2, abs(2 * k - 2) / 2, abs(4 * k - 8) / 8])
    assert trust.median_relative_error == pytest.approx(errors[1])
    # ranks (1, 2, 3) against (1.5, 1.5, 3): Pearson of the ranks
    assert trust.spearman_rho == pytest.approx(np.corrcoef([1, 2, 3], [1.5, 1.5, 3])[0, 1])


def test_reversed_order_is_called_opposite() -> None:
    trust = trust_statistics([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert trust.spearman_rho == pytest.approx(-1.0)
    assert "opposite order" in trust.statement


def test_fewer_than_three_usable_pairs_cannot_be_judged() -> None:
    # a zero and a NaN measurement do not count
    trust = trust_statistics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, math.nan])
    assert trust.n == 2
    assert (trust.spearman_rho, trust.scale_k, trust.median_relative_error) == (None, None, None)
    assert trust.statement.startswith("Cannot be judged")


def test_equal_modelled_values_have_no_ranking_but_a_scale() -> None:
    trust = trust_statistics([2.0, 2.0, 2.0], [1.0, 2.0, 4.0])
    assert trust.spearman_rho is None and trust.scale_k == pytest.approx(1.0)
    assert "cannot be compared" in trust.statement


# ------------------------------------------------------------------------------------------- the rows


def test_rows_remeasure_kept_models_and_say_when_there_is_none(run) -> None:
    meter = fake_meter()
    report = load_report(run)
    check = remeasure(run, report, meter=meter, measure_options=FAST)
    assert [r.trial_id for r in check.rows] == [1, 2, 3, 4]
    assert [r.is_default for r in check.rows] == [True, False, False, False]
    assert all(r.on_front for r in check.rows)
    for row, config in zip(check.rows, CONFIGS, strict=True):
        assert row.model_source == "run"
        assert row.energy_model_j == pytest.approx(modelled(config))
    for row in check.rows[:3]:
        assert row.measured_source == "re-measured" and row.meter == "fake"
        assert row.energy_measured_j is not None and row.energy_measured_j > 0
        assert row.measured_method.startswith("fake")
        spread = row.measured_spread
        assert spread["n"] >= 2 and spread["std_j"] > 0 and 0 < spread["rse"] < 1
        assert row.note is None
    last = check.rows[3]
    assert last.energy_measured_j is None and last.note == NO_KEPT_MODEL and last.checkpoint is None
    assert check.measured_now == 3 and check.reused == 0 and check.device == "cpu"
    assert check.trust.n == 3 and check.trust.scale_k > 0 and check.trust.median_relative_error >= 0
    assert check.trust.spearman_rho is not None


def test_the_cache_is_reused_until_a_kept_model_changes(run) -> None:
    report = load_report(run)
    first = remeasure(run, report, meter=fake_meter(), measure_options=FAST)
    assert (run / CACHE_PATH).is_file()

    meter = fake_meter()
    second = remeasure(run, report, meter=meter, measure_options=FAST)
    assert meter.readings == 0, "a cached crosscheck must not measure"
    assert second.reused == 3 and second.measured_now == 0
    assert [r.energy_measured_j for r in second.rows] == [r.energy_measured_j for r in first.rows]
    assert {r.measured_source for r in second.rows[:3]} == {"re-measured (cached)"}

    # A rewritten model invalidates its entry only.
    kept = run / first.rows[1].checkpoint
    stat = kept.stat()
    os.utime(kept, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = remeasure(run, report, meter=meter, measure_options=FAST)
    assert third.measured_now == 1 and third.reused == 2 and meter.readings > 0
    # Other measurement options are another measurement.
    other = remeasure(run, report, meter=fake_meter(), measure_options={**FAST, "max_repeats": 4})
    assert other.measured_now == 3


def test_a_measurement_with_the_named_meter_is_reused_by_auto(run, monkeypatch) -> None:
    """`report --remeasure --meter codecarbon`, then a plain `report` (meter auto) shows the values."""
    import greenshift.objectives.meters as meters
    import greenshift.report.energy as energy

    recorded = {
        "energy_measured_j": 0.5,
        "meter": "codecarbon",
        "measured_method": "test",
        "measured_spread": {},
    }
    monkeypatch.setattr(energy, "_remeasure", lambda *args: (dict(recorded), None))
    report = load_report(run)
    remeasure(run, report, meter="codecarbon", measure_options=FAST)
    monkeypatch.setattr(
        meters, "choose_meter", lambda name, device=None, **kw: (fake_meter_named("codecarbon"), "auto")
    )
    check = energy_crosscheck(run, report, meter="auto", measure_options=FAST)
    assert check.reused == 3 and [r.energy_measured_j for r in check.rows[:3]] == [0.5] * 3
    monkeypatch.setattr(
        meters, "choose_meter", lambda name, device=None, **kw: (fake_meter_named("rapl"), "auto")
    )
    assert energy_crosscheck(run, report, meter="auto", measure_options=FAST).reused == 0


def fake_meter_named(name: str) -> FakeMeter:
    meter = fake_meter()
    meter.name = name
    return meter


def test_loading_and_crosschecking_measure_nothing(run) -> None:
    """Measuring is an explicit step (remeasure): loading a report or crosschecking it never measures."""
    meter = fake_meter()
    report = load_report(run)
    assert report.crosscheck is None
    check = energy_crosscheck(run, report, meter=meter, measure_options=FAST)
    assert add_crosscheck(run, report, meter=meter, measure_options=FAST).crosscheck == check
    assert meter.readings == 0 and not (run / CACHE_PATH).exists()
    assert all(r.energy_measured_j is None for r in check.rows)
    assert "not measured yet" in check.rows[0].note and "--remeasure" in check.rows[0].note
    assert check.trust.n == 0 and check.trust.statement.startswith("Cannot be judged")


def test_a_deleted_kept_model_is_named(run) -> None:
    report = load_report(run)
    kept = run / "checkpoints" / "model-2.pt"
    kept.unlink()
    check = remeasure(run, report, meter=fake_meter(), measure_options=FAST)
    assert "missing" in check.rows[1].note and check.rows[1].energy_measured_j is None


def test_modelled_energy_is_computed_from_the_configuration(tmp_path, cache_env) -> None:
    run = make_run(tmp_path / "run", ["loss", "size_bits"])
    meter = fake_meter()
    check = energy_crosscheck(run, load_report(run), meter=meter, measure_options=FAST)
    for row, config in zip(check.rows, CONFIGS, strict=True):
        assert row.model_source == "computed from the configuration"
        assert row.energy_model_j == pytest.approx(modelled(config), rel=1e-12)
    # shifting more layers at fewer bits costs less in the model
    energies = [r.energy_model_j for r in check.rows]
    assert energies == sorted(energies, reverse=True)


def test_measured_values_of_the_run_are_used_and_fallbacks_remeasured(tmp_path, cache_env) -> None:
    details = {
        "meter": "codecarbon",
        "method": "codecarbon estimate",
        "std_j_per_image": 1e-4,
        "rse": 0.03,
        "n": 4,
    }
    run = make_run(
        tmp_path / "run",
        ["loss", "energy_measured_j"],
        measured_metrics=details,
        fallback="codecarbon meter unavailable: not installed",
    )
    meter = fake_meter()
    check = remeasure(run, load_report(run), meter=meter, measure_options=FAST)
    first, second = check.rows[0], check.rows[1]
    assert first.measured_source == "run" and first.energy_measured_j == pytest.approx(4e-3)
    assert first.meter == "codecarbon" and first.measured_spread["rse"] == 0.03
    assert first.model_source == "computed from the configuration"
    # the run's value for trial 2 was the model in disguise: measured again, and said so
    assert second.measured_source == "re-measured" and second.meter == "fake"
    assert "fell back" in second.note and "not installed" in second.note
    assert check.measured_now == 1


def test_unknown_meter_is_a_config_error(run) -> None:
    from greenshift.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown energy meter"):
        energy_crosscheck(run, load_report(run), meter="joulemeter")


# --------------------------------------------------------------------------------------- the report


def test_report_json_html_and_figure_carry_the_crosscheck(run) -> None:
    report = add_crosscheck(run, load_report(run), remeasure=True, meter=fake_meter(), measure_options=FAST)
    assert report.crosscheck is not None
    data = report_json(report)
    json.dumps(data, allow_nan=False)
    section = data["energy_crosscheck"]
    row_keys = {
        "trial_id",
        "is_default",
        "energy_model_j",
        "energy_measured_j",
        "measured_method",
        "measured_spread",
        "note",
    }
    assert all(row_keys <= set(row) for row in section["rows"])
    assert set(section["trust"]) >= {"spearman_rho", "scale_k", "median_relative_error", "n", "statement"}
    assert section["trust"]["n"] == 3

    paths = write_report(report, run)
    assert paths["crosscheck"].name == "energy_crosscheck.png"
    assert paths["crosscheck"].read_bytes().startswith(b"\x89PNG")
    text = paths["html"].read_text()
    assert "Modelled vs measured energy" in text and "How far to trust the modelled energy" in text
    assert "float multiplications" in text and "no kept model" in text and "--keep-models pareto" in text
    assert json.loads(paths["json"].read_text())["energy_crosscheck"]["trust"]["n"] == 3


def test_without_crosscheck_the_report_is_as_before(run) -> None:
    report = load_report(run)
    assert report.crosscheck is None and report_json(report)["energy_crosscheck"] is None
    paths = write_report(report, run / "plain")
    assert "crosscheck" not in paths and not (run / "plain" / "energy_crosscheck.png").exists()
    assert "Modelled vs measured energy" not in paths["html"].read_text()


def test_crosscheck_of_a_real_search(tmp_path, cache_env) -> None:
    from greenshift.search import DSNNSearch, SearchSettings

    settings = SearchSettings(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(tmp_path / "run"),
        optimizer="random",
        trials=4,
        min_epochs=1,
        max_epochs=1,
        device="cpu",
        keep_models="pareto",
        fixed={"batch_size": "64"},
    )
    result = DSNNSearch(settings).run()
    report = load_report(result.run_dir)
    check = remeasure(result.run_dir, report, meter=fake_meter(), measure_options=FAST)
    kept = {t.trial_id for t in result.trials if t.checkpoint}
    assert check.rows and check.measured_now == len(check.rows)
    assert {r.trial_id for r in check.rows} <= kept  # --keep-models pareto keeps front and default
    for row in check.rows:
        assert row.energy_model_j > 0 and row.energy_measured_j > 0 and row.measured_spread["n"] >= 2


# -------------------------------------------------------------------------------------- screenshots


def test_screenshot_script_says_how_to_install_chromium(tmp_path) -> None:
    page = tmp_path / "report.html"
    page.write_text("<p>x</p>")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(page), "--browser", str(tmp_path / "no-chromium")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "apt-get install chromium" in done.stderr


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_chromium_renders_the_report_into_a_non_blank_png(run) -> None:
    from PIL import Image

    report = add_crosscheck(run, load_report(run), remeasure=True, meter=fake_meter(), measure_options=FAST)
    write_report(report, run)
    out = run / "shot.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(run), "--out", str(out), "--height", "2400"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pixels = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    # text, tables and figures: a real share of dark pixels and contrast, not a white page
    assert (pixels < 128).mean() > 0.005 and pixels.std() > 10


def test_a_given_energy_table_replaces_the_run_s_modelled_values(run, tmp_path) -> None:
    """E.g. a table from `greenshift calibrate`: every row is modelled again with it."""
    table = default_energy_table().to_dict()
    for key in ("int_add_pj", "fp_add_pj", "fp_mult_pj", "int_mult_pj"):
        table[key] = {w: 2 * v for w, v in table[key].items()}
    table["memory_read_pj_per_64_bits"] = {m: 2 * v for m, v in table["memory_read_pj_per_64_bits"].items()}
    path = tmp_path / "doubled.json"
    path.write_text(json.dumps(table))
    check = energy_crosscheck(
        run,
        load_report(run),
        meter=fake_meter(),
        measure_options=FAST,
        energy_table=str(path),
    )
    for row, config in zip(check.rows, CONFIGS, strict=True):
        assert row.model_source == "computed from the configuration"
        assert row.energy_model_j == pytest.approx(2 * modelled(config), rel=1e-9)
