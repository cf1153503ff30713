"""The command line: listings, train, profile, search with synthetic trials, report/pick/compare, errors, docs."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greenshift import cli
from greenshift.cli import common, main
from greenshift.cli import search as cli_search
from greenshift.errors import ConfigError
from greenshift.report import load_report
from greenshift.search.settings import PRESETS, search_keys
from greenshift.testing import SyntheticTrial

ROOT = Path(__file__).resolve().parents[1]
SEARCH = [
    "search",
    "--dataset",
    "digits",
    "--backbone",
    "resnet20",
    "--trials",
    "10",
    "--max-epochs",
    "3",
    "--seed",
    "1",
    # CountingTrial counts calls in this process: trials stay in it
    "--no-isolate-trials",
]
TRIALS = 10


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("greenshift") and ": error: " in lines[0]
    return lines[0]


class CountingTrial(SyntheticTrial):
    """A synthetic trial that counts how often the search really ran a trial."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search run by the CLI with synthetic trials: (run dir, trial function, stdout)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    trial = CountingTrial()
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_search, "_trial_function", trial)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([*SEARCH, "--out", str(out)])
    assert code == 0, stderr.getvalue()
    return out, trial, stdout.getvalue()


@pytest.fixture
def synthetic(monkeypatch):
    trial = CountingTrial()
    monkeypatch.setattr(cli_search, "_trial_function", trial)
    return trial


def copy_run(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


# -- listings --------------------------------------------------------------------------------------
def test_datasets_json_lists_digits(capsys):
    code, out, _ = run_cli(capsys, "datasets", "--json")
    assert code == 0
    by_name = {d["name"]: d for d in json.loads(out)}
    assert by_name["digits"]["needs_data_dir"] is False and "cifar10" in by_name


def test_models_hide_tiny_variants_unless_all(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    names = [m["name"] for m in json.loads(out)]
    assert code == 0 and "resnet20" in names and "tiny_cnn" not in names
    _, out, _ = run_cli(capsys, "models", "--all", "--json")
    assert "tiny_cnn" in [m["name"] for m in json.loads(out)]
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "resnet20" in out and "tiny_cnn" not in out


# -- train and profile -----------------------------------------------------------------------------
def test_train_json_reports_accuracy_and_applies_precedence(capsys, cache_dir, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: digits\nbackbone: tiny_cnn\nepochs: 1\nweight_bits: 4\nset: {shift_depth: 2}\n"
    )
    code, out, err = run_cli(capsys, "train", "--config", str(config), "--set", "weight_bits=3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert 0.0 <= data["val_accuracy"] <= 1.0 and data["epochs_completed"] == 1
    assert data["config"]["weight_bits"] == 3  # command line beats the file
    assert data["config"]["shift_depth"] == 2  # from the file's set
    assert data["config"]["shift_type"] == "PS"  # default


TRAIN = ["train", "--dataset", "digits", "--epochs", "1"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([*TRAIN, "--backbone", "tiny_cnn", "--set", "weight_bits=9"], "weight_bits=9 is out of range"),
        ([*TRAIN, "--backbone", "resnet2"], "did you mean 'resnet20'"),
        (
            ["train", "--dataset", "digitz", "--epochs", "1", "--backbone", "tiny_cnn"],
            "unknown data set 'digitz'",
        ),
        ([*TRAIN, "--backbone", "tiny_cnn", "--set", "shift_depth=99"], "shift_depth=99 exceeds"),
        ([*TRAIN, "--backbone", "tiny_cnn", "--set", "weight_bits"], "--set expects key=value"),
        ([*TRAIN, "--backbone", "tiny_cnn", "--epochs", "x"], "invalid int value"),
        ([*TRAIN], "--backbone is required"),
        (
            [
                "search",
                "--dataset",
                "digits",
                "--backbone",
                "tiny_cnn",
                "--out",
                "unused",
                "--threads-per-trial",
                "0",
            ],
            "--threads-per-trial must be at least 1, got 0",
        ),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, cache_dir, monkeypatch, argv, expected):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert expected in one_error_line(err)


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ConfigError, match="weight_bits=9"):
        main(
            ["--debug", "profile", "--backbone", "tiny_cnn", "--dataset", "digits", "--set", "weight_bits=9"]
        )
    with pytest.raises(ConfigError, match="weight_bits=9"):
        main(
            ["profile", "--debug", "--backbone", "tiny_cnn", "--dataset", "digits", "--set", "weight_bits=9"]
        )


def test_profile_totals_equal_the_sum_of_layers(capsys, cache_dir):
    code, out, err = run_cli(
        capsys, "profile", "--backbone", "tiny_cnn", "--dataset", "digits", "--set", "shift_depth=2", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    layers, totals = data["layers"], data["totals"]
    assert totals["energy_j"] == pytest.approx(sum(layer["energy_j"] for layer in layers), rel=1e-12)
    assert totals["macs"] == sum(layer["macs"] for layer in layers)
    assert {layer["kind"] for layer in layers} == {"float", "shift"}
    assert totals["input_shape"] == [1, 8, 8]
    code, out, _ = run_cli(capsys, "profile", "--backbone", "tiny_cnn", "--dataset", "digits")
    assert code == 0 and "total" in out and "shift" in out


# -- search ----------------------------------------------------------------------------------------
def test_search_prints_the_pareto_table_and_the_default(searched):
    _, trial, out = searched
    assert trial.calls == TRIALS
    assert "Pareto front at 3 epochs" in out
    assert "default configuration (trial 1)" in out
    assert "front configurations beat the default on every objective" in out


def test_identical_search_resumes_without_running_trials(searched, synthetic, capsys, tmp_path):
    run = copy_run(searched[0], tmp_path)
    code, out, err = run_cli(capsys, *SEARCH, "--out", str(run), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert synthetic.calls == 0
    assert data["trials_resumed"] == TRIALS and data["trials_new"] == 0
    assert data["pareto"] and data["default"]["trial_id"] == 1


def test_search_with_other_objectives_is_refused_and_leaves_the_run_untouched(
    searched, synthetic, capsys, tmp_path
):
    run = copy_run(searched[0], tmp_path)

    def files() -> dict[str, bytes]:  # the writer lock names the last search that held it, not the run
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "writer.lock"}

    before = files()
    code, _, err = run_cli(capsys, *SEARCH, "--out", str(run), "--objectives", "loss,size_bits")
    assert code == 2 and synthetic.calls == 0
    assert "different settings" in one_error_line(err)
    assert files() == before


def test_search_settings_precedence_flags_file_preset(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("trials: 7\nmax_epochs: 3\nobjectives: [loss, size_bits]\nset: {shift_type: Q}\n")
    parser = cli.build_parser()
    argv = [
        "search",
        "--dataset",
        "digits",
        "--backbone",
        "resnet20",
        "--out",
        str(tmp_path / "r"),
        "--preset",
        "demo",
    ]
    args = parser.parse_args([*argv, "--config", str(config), "--trials", "5", "--set", "weight_bits=4"])
    settings = cli_search.search_settings(args)
    assert settings.trials == 5  # flag > file > preset
    assert settings.max_epochs == 3  # file > preset
    assert settings.eta == PRESETS["demo"]["eta"]
    assert settings.objectives == ("loss", "size_bits")
    assert dict(settings.fixed) == {"shift_type": "Q", "weight_bits": "4"}
    demo = cli_search.search_settings(parser.parse_args([*argv, "--max-epochs", "27"]))
    assert demo.trials == PRESETS["demo"]["trials"] and demo.max_epochs == 27
    config.write_text("trails: 7\n")
    with pytest.raises(ConfigError, match="unknown key"):
        cli_search.search_settings(parser.parse_args([*argv, "--config", str(config)]))


def test_cli_choices_match_the_library():
    from greenshift.cli import common
    from greenshift.objectives import OBJECTIVES
    from greenshift.objectives.meters import METER_NAMES

    # The parser repeats these two so that building it does not import torch; the rest it imports.
    assert tuple(METER_NAMES) == common.METERS
    assert tuple(OBJECTIVES) == common.OBJECTIVE_NAMES


def test_every_search_setting_has_a_flag_named_after_its_config_key():
    keys = set(search_keys())
    flags = common.flags_of(
        next(a for a in cli.build_parser()._actions if a.dest == "command").choices["search"]
    )
    assert keys <= set(flags), keys - set(flags)
    assert all(flags[key] == "--" + key.replace("_", "-") for key in keys)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-epochs", "3", "--min-epochs", "4"], "1 <= --min-epochs <= --max-epochs, got 4 and 3"),
        (["--walltime", "-1"], "--walltime must be positive, got -1.0"),
        (["--country", "de"], "--country must be a three-letter ISO 3166 code"),
        (["--max-total-epochs", "2"], "--max-total-epochs 2 is below --max-epochs 9"),
        (["--objective-weights", "a,b"], "--objective-weights must be a number, got 'a'"),
        (["--range", "lr"], "--range expects key=value, got 'lr'"),
    ],
)
def test_search_errors_name_the_flags(capsys, monkeypatch, tmp_path, argv, expected):
    base = ["search", "--dataset", "digits", "--backbone", "tiny_cnn", "--out", str(tmp_path / "r")]
    code, out, err = run_cli(capsys, *base, *argv)
    assert code == 2 and out == ""
    assert expected in one_error_line(err)


def test_a_config_file_error_names_the_files_key(capsys, monkeypatch, tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("trials: many\n")
    code, _, err = run_cli(
        capsys,
        "search",
        "--dataset",
        "digits",
        "--backbone",
        "tiny_cnn",
        "--out",
        "r",
        "--config",
        str(config),
    )
    assert code == 2
    assert f"config file {config}: trials must be an integer, got 'many'" in one_error_line(err)


# -- report, pick, compare -------------------------------------------------------------------------
def test_report_writes_files_and_prints_json(searched, capsys, tmp_path):
    code, out, err = run_cli(capsys, "report", str(searched[0]), "--out", str(tmp_path / "report"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"pareto", "default", "improvement", "hypervolume", "importance", "reference_point"} <= set(data)
    assert data["default"]["trial_id"] == 1 and data["pareto"]
    for name in (
        "report.html",
        "report.json",
        "pareto.csv",
        "pareto.png",
        "hypervolume.png",
        "importance.png",
    ):
        assert (tmp_path / "report" / name).is_file(), name
    run = copy_run(searched[0], tmp_path)
    code, out, _ = run_cli(capsys, "report", str(run))
    assert code == 0 and "hypervolume" in out and "importance for loss" in out
    assert (run / "report.html").is_file()


def test_pick_knee_and_bounds(searched, capsys):
    run = str(searched[0])
    code, out, _ = run_cli(capsys, "pick", run, "--knee", "--json")
    assert code == 0
    knee = json.loads(out)
    assert {"trial_id", "config", "objectives", "reason"} <= set(knee)
    assert knee["trial_id"] in {entry.trial_id for entry in load_report(run).front}
    code, out, _ = run_cli(capsys, "pick", run, "--max-loss", "1.0")
    assert code == 0 and "trial" in out
    code, _, err = run_cli(capsys, "pick", run, "--max-loss", "0")
    assert code == 2 and "no configuration has loss <= 0" in one_error_line(err)
    code, _, err = run_cli(capsys, "pick", run)
    assert code == 2 and "one of the arguments" in one_error_line(err)


def test_compare_two_runs(searched, capsys, tmp_path):
    other = copy_run(searched[0], tmp_path, "other")
    target = tmp_path / "cmp" / "comparison.html"
    code, out, err = run_cli(capsys, "compare", str(searched[0]), str(other), "--out", str(target), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["name"] for r in data["runs"]] == ["run", "other"]
    assert data["runs"][0]["final_hypervolume"] == pytest.approx(data["runs"][1]["final_hypervolume"])
    assert all(Path(p).is_file() for p in data["files"].values())
    code, out, _ = run_cli(capsys, "compare", str(searched[0]), str(other), "--out", str(target))
    assert code == 0 and "common reference point" in out


def test_report_of_a_missing_run_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "nothing"))
    assert code == 2 and "not a greenshift run directory" in one_error_line(err)


# -- export and evaluate --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A synthetic search over tiny_cnn at one epoch: its trials keep no model, so export retrains."""
    out = tmp_path_factory.mktemp("cli-tiny") / "run"
    argv = ["search", "--dataset", "digits", "--backbone", "tiny_cnn", "--trials", "3"]
    argv += ["--min-epochs", "1", "--max-epochs", "1", "--out", str(out), "--json"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENSHIFT_CACHE", str(out.parent / "cache"))
        mp.setattr(cli_search, "_trial_function", SyntheticTrial(max_depth=3))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(argv) == 0
    return out


def test_export_retrains_and_evaluate_scores_the_file(tiny_run, capsys, cache_dir, tmp_path):
    model = tmp_path / "model.pt"
    code, _, err = run_cli(
        capsys, "export", str(tiny_run), "--trial", "1", "--out", str(model), "--no-retrain"
    )
    assert code == 2 and "kept no model checkpoint" in one_error_line(err)
    assert not model.exists()
    code, out, err = run_cli(capsys, "export", str(tiny_run), "--trial", "1", "--out", str(model), "--json")
    assert code == 0, err
    exported = json.loads(out)
    assert exported["source"] == "retrained" and exported["trial_id"] == 1
    assert exported["size_bytes"] == model.stat().st_size and exported["float_size_bytes"] > 0
    code, out, _ = run_cli(capsys, "export", str(tiny_run), "--trial", "1", "--out", str(model))
    assert code == 0 and "retrained (1 epochs, seed" in out and "compression" in out
    code, out, err = run_cli(capsys, "evaluate", str(model), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["dataset"] == "digits" and scores["split"] == "val" and 0.0 <= scores["accuracy"] <= 1.0
    code, out, _ = run_cli(capsys, "evaluate", str(model), "--integer", "--split", "test")
    assert code == 0 and "integer reference" in out and "accuracy" in out
    code, _, err = run_cli(capsys, "export", str(tiny_run), "--trial", "99", "--out", str(model))
    assert code == 2 and "has no trial 99" in one_error_line(err)


# -- the installed command and the docs -------------------------------------------------------------
def _console_script() -> Path:
    path = Path(sys.executable).parent / "greenshift"
    if not path.is_file():
        pytest.skip("the greenshift console script is not installed next to this Python")
    return path


def test_console_script_help():
    done = subprocess.run([str(_console_script()), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "greenshift" in done.stdout and "search" in done.stdout


def test_console_script_bad_value_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "GREENSHIFT_CACHE": str(tmp_path / "cache")}
    argv = [
        str(_console_script()),
        "profile",
        "--backbone",
        "tiny_cnn",
        "--dataset",
        "digits",
        "--set",
        "weight_bits=9",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "greenshift: error: weight_bits=9 is out of range: expected an integer in [2, 8]"
    ]


def test_docs_cli_md_is_generated_from_the_current_help():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    # Whitespace is normalised because argparse wraps lines slightly differently across Python versions.
    assert " ".join(current.split()) == " ".join(expected.split()), "run: python scripts/gen_cli_docs.py"
    for command in ("datasets", "models", "train", "profile", "search", "report", "pick", "compare"):
        assert f"## `greenshift {command}`" in current
