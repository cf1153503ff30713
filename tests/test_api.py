"""The Python API: docs/api.md's example runs as written, and a run opens as an object."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import greenshift
from greenshift.errors import StoreError
from greenshift.store import TrialStatus

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _first_example() -> str:
    found = re.search(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    assert found, "docs/api.md has a python example"
    return found.group(1)


@pytest.mark.slow
def test_the_api_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_first_example(), str(API_DOC), "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, greenshift.Run) and run.path == Path("runs/api-demo")
    # 12 configurations were asked; Hyperband ran some at every budget, the default at the full one
    assert len(run.trials()) >= 12
    front = run.front()
    assert front and all(entry.budget_epochs == 3 for entry in front)
    losses = [entry.objectives["loss"] for entry in front]
    energies = [entry.objectives["energy_model_j"] for entry in front]
    assert losses == sorted(losses) or energies == sorted(energies, reverse=True) or len(front) == 1
    assert run.default() is not None and run.default().is_default
    assert (tmp_path / "runs/api-demo/report.html").is_file()
    assert (tmp_path / "model.pt").is_file()
    exported = namespace["info"]
    assert exported.size_bytes < exported.float_size_bytes
    assert "digits" in repr(run.settings) and run.objectives == ("loss", "energy_model_j")
    assert "configurations" not in capsys.readouterr().err  # the search itself prints nothing


def test_open_run_refuses_a_folder_that_is_no_run(tmp_path) -> None:
    with pytest.raises(StoreError, match="is not a greenshift run"):
        greenshift.open_run(tmp_path)


def test_a_run_lists_trials_by_status(tmp_path) -> None:
    from greenshift.search import DSNNSearch, SearchSettings
    from greenshift.testing import SyntheticTrial

    settings = SearchSettings(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(tmp_path / "run"),
        trials=9,
        max_epochs=3,
        isolate_trials=False,
    )
    result = DSNNSearch(settings, trial_function=SyntheticTrial()).run()
    run = greenshift.open_run(tmp_path / "run")
    assert [t.trial_id for t in run.trials()] == [t.trial_id for t in result.trials]
    assert run.trials("ok") == run.trials(TrialStatus.OK) and run.trials("crashed") == []
    # the run's front is the search's front: one definition (greenshift.store.run_front)
    assert list(run.front()) == list(result.pareto)


def test_greenshift_search_is_the_package_and_the_function() -> None:
    from greenshift.search import DSNNSearch

    assert callable(greenshift.search) and greenshift.search.DSNNSearch is DSNNSearch
    assert set(greenshift.__all__) >= {"search", "open_run", "Run", "DSNNConfig"}


PACKAGES = ("data", "models", "shift", "train", "objectives", "store", "report", "export")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_what_docs_api_lists(package) -> None:
    import importlib

    row = re.search(rf"^\| `greenshift\.{package}` \|(.*)\|$", API_DOC.read_text(), re.M)
    assert row, f"docs/api.md lists greenshift.{package}"
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z_0-9]*)`", row.group(1)))
    module = importlib.import_module(f"greenshift.{package}")
    # __all__ is the user's surface: each name resolves, and docs/api.md lists exactly these names
    assert all(getattr(module, name) is not None for name in module.__all__)
    assert listed == set(module.__all__)
