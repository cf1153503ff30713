"""What a user reads is true: one meaning per name, every failure explained, every trial listable.

Each test names the promise it checks; together they cover loss vs cross-entropy, search space files,
fixed values checked up front, failures shown, exported models evaluated from their own record, a
baseline that ranges do not move, importance of the modelled energy, the trials command and SMAC's
run history, Ctrl-C, the emissions country and the smaller promises of the CLI and the data readers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greenshift import cli
from greenshift.cli import main
from greenshift.cli import search as cli_search
from greenshift.errors import ConfigError, DataError
from greenshift.report import compare_runs, load_report
from greenshift.report.data import FrontEntry, build_report
from greenshift.report.importance import compute_importance
from greenshift.search import DSNNSearch, SearchSettings
from greenshift.search.space import load_space_file
from greenshift.store import RunStore, TrialRecord, TrialStatus
from greenshift.testing import SyntheticTrial

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ["search", "--dataset", "digits", "--backbone", "resnet20", "--max-epochs", "3", "--seed", "1"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


class CountingTrial(SyntheticTrial):
    """A synthetic trial that counts its calls (and can crash for some configurations)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


@pytest.fixture
def synthetic(monkeypatch):
    trial = CountingTrial()
    monkeypatch.setattr(cli_search, "_trial_function", trial)
    return trial


@pytest.fixture(scope="module")
def crashing_run(tmp_path_factory):
    """A CLI search in which every adam/radam trial crashes: (run dir, stdout)."""
    out = tmp_path_factory.mktemp("crash") / "run"
    trial = SyntheticTrial(crash_when={"optimizer": ["adam", "radam", "adagrad", "ranger"]})
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_search, "_trial_function", trial)
        mp.setattr("sys.stdout", stdout)
        code = main([*SEARCH, "--trials", "12", "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


# -- 1. loss is 1 - accuracy; the cross-entropy is cross_entropy -----------------------------------
def test_train_names_the_cross_entropy_so_and_never_loss(capsys, cache_dir):
    argv = ["train", "--dataset", "digits", "--backbone", "tiny_cnn", "--epochs", "1"]
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert "val_cross_entropy" in data and "val_loss" not in data
    assert set(data["history"]) == {"val_accuracy", "val_cross_entropy", "train_cross_entropy"}
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "validation cross-entropy" in out and "loss" not in out


def test_api_example_prints_one_meaning_of_each_name():
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert "final_cross_entropy" in api and "cross_entropy" in api
    assert "val_loss" not in api and "final_loss" not in api
    concepts = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert "`loss` always means 1 − accuracy" in concepts


# -- 2. space files: ConfigSpace's plain form loads; an empty space is refused ------------------------
def test_plain_space_file_gives_ranges_choices_and_constants(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "lr: [0.001, 0.1]\noptimizer: [sgd, adam]\nweight_bits: [2, 4]\nshift_type: Q\n"
        "weight_decay: {low: 0.00001, high: 0.01, log: true, default: 0.0001}\n"
    )
    space = load_space_file(path)
    assert (space["lr"].lower, space["lr"].upper) == (0.001, 0.1)
    assert list(space["optimizer"].choices) == ["sgd", "adam"]
    assert (space["weight_bits"].lower, space["weight_bits"].upper) == (2, 4)
    assert space["shift_type"].value == "Q"
    assert space["weight_decay"].log and space["weight_decay"].default_value == pytest.approx(1e-4)
    json_path = tmp_path / "space.json"
    json_path.write_text(json.dumps({"lr": [0.001, 0.1], "optimizer": ["sgd", "adam"]}))
    assert set(load_space_file(json_path)) == {"lr", "optimizer"}


@pytest.mark.parametrize("text", ["{}\n", "hyperparameters: []\n"])
def test_empty_space_file_is_refused_before_any_trial(synthetic, capsys, tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    code, _, err = run_cli(
        capsys, *SEARCH, "--trials", "4", "--space", str(path), "--out", str(tmp_path / "r")
    )
    assert code == 2 and synthetic.calls == 0
    assert "defines no hyperparameters" in error_line(err)


def test_search_with_a_plain_space_file_varies_the_configurations(synthetic, capsys, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: [0.001, 0.1]\noptimizer: [sgd, adam]\n")
    run = tmp_path / "r"
    code, _, err = run_cli(capsys, *SEARCH, "--trials", "6", "--space", str(path), "--out", str(run))
    assert code == 0, err
    with RunStore.open(run) as store:
        configs = [r.config for r in store.trials() if not r.is_default]
    assert len({json.dumps(c, sort_keys=True) for c in configs}) > 1 and all(c for c in configs)


def test_docs_show_an_example_space_file():
    search = (ROOT / "docs" / "search.md").read_text(encoding="utf-8")
    assert "lr: [0.001, 0.1]" in search and "optimizer: [sgd, adam]" in search


# -- 3. fixed values checked before the first trial; failures shown with their errors -----------------
def test_fixed_depth_beyond_the_backbone_is_refused_before_any_trial(synthetic, capsys, tmp_path):
    argv = ["search", "--dataset", "digits", "--backbone", "small_cnn", "--trials", "4", "--max-epochs", "3"]
    code, _, err = run_cli(capsys, *argv, "--set", "shift_depth=30", "--out", str(tmp_path / "r"))
    assert code == 2 and synthetic.calls == 0
    assert "shift_depth=30 exceeds the 4 shiftable layers" in error_line(err)


def test_search_prints_failed_trials_grouped_by_error(crashing_run):
    run, out = crashing_run
    with RunStore.open(run) as store:
        failed = [r for r in store.trials() if r.status is TrialStatus.CRASHED]
    assert failed
    assert f"{len(failed)} trial(s) failed" in out
    assert f"{len(failed)} x crashed: RuntimeError: synthetic crash" in out


def test_report_shows_failed_trials_in_text_json_and_html(crashing_run, capsys, tmp_path):
    run, _ = crashing_run
    with RunStore.open(run) as store:
        failed = sorted(r.trial_id for r in store.trials() if r.status is TrialStatus.CRASHED)
    out_dir = tmp_path / "report"
    code, out, err = run_cli(capsys, "report", str(run), "--out", str(out_dir), "--no-crosscheck")
    assert code == 0, err
    assert f"{len(failed)} x crashed: RuntimeError: synthetic crash" in out
    data = json.loads((out_dir / "report.json").read_text())
    assert data["failures"] == [
        {
            "error": "RuntimeError: synthetic crash",
            "count": len(failed),
            "statuses": ["crashed"],
            "trial_ids": failed,
        }
    ]
    html = (out_dir / "report.html").read_text()
    assert "Failed trials" in html and "RuntimeError: synthetic crash" in html
    assert "noise floor" in html  # the importance table says what counts as noise


# -- 4. evaluate reads the data set and its folder from the exported file ------------------------------
def _image_tree(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8) + np.uint8(150 * index)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_evaluate_takes_data_set_and_folder_from_the_export(capsys, cache_dir, tmp_path, monkeypatch):
    from greenshift.export import export_trial

    data = _image_tree(tmp_path / "images")
    run = tmp_path / "run"
    settings = SearchSettings(
        dataset="folder",
        data_dir=str(data),
        backbone="tiny_cnn",
        out=str(run),
        trials=2,
        min_epochs=1,
        max_epochs=1,
        device="cpu",
    )
    DSNNSearch(settings, trial_function=SyntheticTrial()).run()
    code, out, err = run_cli(capsys, "export", str(run), "--trial", "1", "--out", str(tmp_path / "m.pt"))
    assert code == 0, err
    evaluate_hint = next(line for line in out.splitlines() if "evaluate it with" in line)
    monkeypatch.chdir(tmp_path / "images")  # another directory: the folder recorded is absolute
    code, out, err = run_cli(capsys, *evaluate_hint.split("greenshift ", 1)[1].split(), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["dataset"] == "folder" and scores["split"] == "test" and scores["n"] == 4
    assert "cross_entropy" in scores and "loss" not in scores
    assert export_trial  # the library function behind the command


# -- 5. ranges never move the baseline; a baseline outside the space is said prominently ------------
@pytest.mark.parametrize(
    ("ranges", "outside"),
    [
        ({"lr": "0.001:0.01"}, {"lr"}),
        ({"batch_size": "32,64", "shift_depth": "2:3"}, {"batch_size", "shift_depth"}),
    ],
)
def test_ranges_do_not_move_the_default_configuration(tmp_path, ranges, outside):
    settings = SearchSettings(
        dataset="digits", backbone="resnet20", out=str(tmp_path / "r"), trials=4, max_epochs=3, ranges=ranges
    )
    result = DSNNSearch(settings, trial_function=SyntheticTrial()).run()
    default = next(r for r in result.trials if r.is_default)
    assert default.config["lr"] == 0.1 and default.config["batch_size"] == 128
    assert default.config["shift_depth"] == 20
    assert set(result.baseline_outside) == outside
    report = load_report(tmp_path / "r")
    assert set(report.baseline_outside) == outside


def test_cli_and_report_say_when_the_default_lies_outside_the_ranges(synthetic, capsys, tmp_path):
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, *SEARCH, "--trials", "4", "--range", "lr=0.001:0.01", "--out", str(run))
    assert code == 0, err
    assert "lies outside the searched space in lr (searched: in [0.001, 0.01])" in " ".join(out.split())
    code, out, _ = run_cli(capsys, "report", str(run), "--no-crosscheck", "--out", str(tmp_path / "rep"))
    assert code == 0 and "lies outside the searched space" in " ".join(out.split())
    assert "lies outside the searched space" in (tmp_path / "rep" / "report.html").read_text()


# -- 6. importance of the modelled energy: only its inputs; a noise floor for learned objectives ------
def _entries(n: int, seed: int = 0) -> list[FrontEntry]:
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        config = {
            "optimizer": str(rng.choice(["sgd", "adam"])),
            "lr": float(10 ** rng.uniform(-3, -1)),
            "weight_decay": float(10 ** rng.uniform(-6, -2)),
            "rounding": str(rng.choice(["deterministic", "stochastic"])),
            "shift_depth": int(rng.integers(1, 21)),
            "weight_bits": int(rng.integers(2, 6)),
        }
        objectives = {
            "loss": 0.1 + 0.02 * config["shift_depth"] + float(rng.normal(0, 0.01)),
            "energy_model_j": 1e-6 * (1 + config["weight_bits"]) * (21 - config["shift_depth"]),
        }
        entries.append(FrontEntry(i, config, objectives, 9.0, f"k{i}"))
    return entries


def test_modelled_energy_importance_credits_only_the_hyperparameters_it_depends_on():
    result = compute_importance(_entries(12), ("loss", "energy_model_j"), n_trees=16)
    energy = result.values["energy_model_j"]
    for name in ("optimizer", "lr", "weight_decay", "rounding"):
        assert energy[name] == 0.0
    assert set(result.excluded["energy_model_j"]) == {"optimizer", "lr", "weight_decay", "rounding"}
    assert energy["shift_depth"] > 0.1 and energy["weight_bits"] > 0.1
    # What the report lists as important never names a hyperparameter the energy cannot depend on.
    assert set(result.reliable_values("energy_model_j")).isdisjoint(result.excluded["energy_model_j"])


def test_learned_objective_importance_has_a_noise_floor():
    result = compute_importance(_entries(40), ("loss", "energy_model_j"), n_trees=32)
    floor = result.noise_floor["loss"]
    assert 0.0 <= floor < result.values["loss"]["shift_depth"]
    assert "shift_depth" not in result.below_noise["loss"]
    assert all(result.values["loss"][name] <= floor for name in result.below_noise["loss"])
    assert set(result.reliable_values("loss")).isdisjoint(result.below_noise["loss"])


# -- 7. every trial listable; SMAC's own run history written ---------------------------------------
def test_trials_lists_every_trial_with_filters_json_and_csv(crashing_run, capsys):
    run, _ = crashing_run
    with RunStore.open(run) as store:
        records = store.trials()
    code, out, err = run_cli(capsys, "trials", str(run), "--json")
    assert code == 0, err
    assert [t["trial_id"] for t in json.loads(out)] == [r.trial_id for r in records]
    code, out, _ = run_cli(capsys, "trials", str(run), "--failed", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows and {row["status"] for row in rows} == {"crashed"}
    assert {row["error"] for row in rows} == {"RuntimeError: synthetic crash"}
    assert set(rows[0]) >= {"trial", "status", "budget_epochs", "loss", "energy_model_j", "duration_s"}
    code, out, _ = run_cli(capsys, "trials", str(run), "--status", "ok", "--budget", "3")
    assert code == 0 and "crashed" not in out and "trial(s) of" in out
    code, _, err = run_cli(capsys, "trials", str(run), "--status", "broken")
    assert code == 2 and "not a status" in error_line(err)


def test_smac_run_history_holds_the_trials_smac_was_told(crashing_run):
    run, _ = crashing_run
    histories = list((run / "smac").rglob("runhistory.json"))
    assert len(histories) == 1
    data = json.loads(histories[0].read_text())
    with RunStore.open(run) as store:
        told = [r for r in store.trials() if not r.is_default and r.finished]
    assert len(data["data"]) == len(told) > 0


# -- 8. one Ctrl-C: the search finishes its running trials and exits 130 ----------------------------
class InterruptingTrial(SyntheticTrial):
    """Sends this process SIGINT (a Ctrl-C) during its second trial."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__call__(*args, **kwargs)


def test_one_ctrl_c_stops_the_search_with_exit_code_130(monkeypatch, capsys, tmp_path):
    trial = InterruptingTrial()
    monkeypatch.setattr(cli_search, "_trial_function", trial)
    # In the search's own process, so that the trial's SIGINT reaches the search as a Ctrl-C would.
    args = (*SEARCH, "--trials", "8", "--out", str(tmp_path / "r"), "--json", "--no-isolate-trials")
    code, out, _ = run_cli(capsys, *args)
    assert code == 130 and trial.calls < 8
    data = json.loads(out)
    assert data["stopped_by_user"] is True and data["stop_reason"] == "stopped by the user"


# -- 9. the emissions country -------------------------------------------------------------------
def test_country_reaches_the_trials_and_is_validated(capsys, tmp_path, monkeypatch):
    args = cli.build_parser().parse_args([*SEARCH, "--out", str(tmp_path / "r"), "--country", "FRA"])
    settings = cli_search.search_settings(args)
    assert settings.country_iso_code == "FRA"
    assert DSNNSearch(settings).get_trial_settings({}).country_iso_code == "FRA"
    assert settings.identity("{}", {})["country_iso_code"] == "FRA"
    assert "country_iso_code" not in SearchSettings(dataset="d", backbone="b", out="o").identity("{}", {})
    code, _, err = run_cli(capsys, *SEARCH, "--out", str(tmp_path / "r"), "--country", "France")
    assert code == 2 and "three-letter ISO 3166 code" in error_line(err)


# -- 10. the smaller promises -------------------------------------------------------------------
def test_report_measures_energy_only_when_asked(crashing_run, capsys, tmp_path, monkeypatch):
    import greenshift.report as report_package

    seen = []
    real = report_package.add_crosscheck

    def spy(run_dir, report, *, remeasure=False, **kwargs):
        seen.append({"remeasure": remeasure})
        return real(run_dir, report, remeasure=remeasure, **kwargs)

    # load_report only reads; the crosscheck measures only with --remeasure.
    monkeypatch.setattr(report_package, "add_crosscheck", spy)
    run, _ = crashing_run
    assert run_cli(capsys, "report", str(run), "--out", str(tmp_path / "a"))[0] == 0
    assert run_cli(capsys, "report", str(run), "--out", str(tmp_path / "b"), "--remeasure")[0] == 0
    assert [c["remeasure"] for c in seen] == [False, True]


def test_report_open_without_a_browser_says_so(crashing_run, capsys, tmp_path, monkeypatch):
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    run, _ = crashing_run
    code, _, err = run_cli(capsys, "report", str(run), "--out", str(tmp_path), "--no-crosscheck", "--open")
    assert code == 0 and "no web browser found" in err and "report.html" in err


def test_report_docs_list_every_file_the_report_writes():
    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    assert "energy_crosscheck.png" in text and "report/energy_crosscheck.json" in text
    assert "--remeasure" in text


def _report(dataset: str):
    record = TrialRecord(
        1, {"lr": 0.1}, 3.0, 0, TrialStatus.OK, {"loss": 0.2, "energy_model_j": 1e-6}, {}, None,
        True, 0.0, 1.0, 1.0, None, None, "k",
    )  # fmt: skip
    return build_report(
        [record], objective_names=("loss", "energy_model_j"), max_budget=3, meta={"dataset": dataset}
    )


def test_compare_refuses_runs_on_different_data_sets():
    with pytest.raises(ConfigError, match=r"different data sets \(a: digits, b: mnist\)"):
        compare_runs([("a", _report("digits")), ("b", _report("mnist"))])
    assert compare_runs([("a", _report("digits")), ("b", _report("digits"))]).comparable


def test_profile_needs_no_data_files_with_an_input_shape(capsys, cache_dir):
    argv = ["profile", "--backbone", "tiny_cnn", "--input-shape", "3,32,32", "--classes", "10", "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["totals"]["input_shape"] == [3, 32, 32]
    code, _, err = run_cli(capsys, "profile", "--backbone", "tiny_cnn", "--dataset", "cifar10")
    assert code == 2 and "--data-dir" in error_line(err)


def test_data_dir_for_a_data_set_without_files_is_an_error(capsys, cache_dir, tmp_path, monkeypatch):
    from greenshift.data import load_dataset

    with pytest.raises(ConfigError, match="'digits' reads no files"):
        load_dataset("digits", data_dir=tmp_path)
    code, _, err = run_cli(capsys, *SEARCH, "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and "reads no files" in error_line(err)


def test_one_class_folder_and_a_folder_one_level_too_deep_are_explained(cache_dir, tmp_path):
    from greenshift.data import load_dataset

    tree = _image_tree(tmp_path / "wrapped" / "images")
    with pytest.raises(DataError, match=r"only one class folder \(images\).*pass it instead"):
        load_dataset("folder", data_dir=tmp_path / "wrapped")
    with pytest.raises(DataError, match=rf"holds images itself, so pass its parent {tree}"):
        load_dataset("folder", data_dir=tree / "a")


def test_optimizer_in_a_config_file_is_always_the_search_optimiser(capsys, cache_dir, tmp_path, monkeypatch):
    train_file = tmp_path / "train.yaml"
    train_file.write_text("dataset: digits\nbackbone: tiny_cnn\nepochs: 1\noptimizer: adam\n")
    code, _, err = run_cli(capsys, "train", "--config", str(train_file))
    assert code == 2 and "set: {optimizer: adam}" in error_line(err)
    search_file = tmp_path / "search.yaml"
    search_file.write_text("optimizer: adam\n")
    code, _, err = run_cli(capsys, *SEARCH, "--out", str(tmp_path / "r"), "--config", str(search_file))
    assert code == 2 and "is a training optimiser" in error_line(err)


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "search.yaml").write_text("data_dir: data/cifar\nspace: space.yaml\nout: runs/x\n")
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["search", "--dataset", "cifar10", "--backbone", "resnet20", "--config", "configs/search.yaml"]
    )
    settings = cli_search.search_settings(args)
    assert settings.data_dir == str(Path("configs") / "data" / "cifar")
    assert settings.space_file == str(Path("configs") / "space.yaml")
    assert settings.out == "runs/x"  # the run directory written stays relative to the current directory


def test_caltech_background_folder_is_documented():
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert "`BACKGROUND_Google` folder is skipped" in text
