"""Report files: PNG figures, CSV, JSON and a self-contained, escaped HTML page; run comparison."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import pytest

from greenshift.report import compare_runs, report_json, write_comparison, write_report
from greenshift.report.data import build_report
from greenshift.report.format import objective_label
from greenshift.store.records import TrialStatus
from test_report import NAMES, cfg, lo, record, synthetic_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report():
    records = synthetic_records()
    # A hostile configuration value on the front (replaces B) and a NaN inside a config.
    b = next(r for r in records if r.config["label"] == "B")
    records[records.index(b)] = record(
        b.trial_id, cfg("B", note=EVIL, odd=float("nan")), 9, objectives=lo(0.09, 8.0)
    )
    return build_report(
        records, objective_names=NAMES, max_budget=9, meta={"dataset": "cifar10", "backbone": "x<y>"}
    )


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    return write_report(report, tmp_path_factory.mktemp("report"))


def test_files_exist_and_are_not_empty(written) -> None:
    assert set(written) == {"pareto", "hypervolume", "importance", "csv", "json", "html"}
    for name in ("pareto", "hypervolume", "importance"):
        data = written[name].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert written["pareto"].name == "pareto.png" and written["html"].name == "report.html"


def test_csv_holds_the_front(written) -> None:
    with written["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial_id"] for r in rows] == ["3", "5", "7"]
    assert {"loss", "energy_model_j", "label", "optimizer", "is_knee"} <= set(rows[0])
    assert float(rows[1]["energy_model_j"]) == 8.0
    assert rows[1]["is_knee"] == "True" and rows[1]["note"] == EVIL


def test_html_is_escaped_and_self_contained(written) -> None:
    text = written["html"].read_text()
    assert EVIL not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "x&lt;y&gt;" in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    for needle in (
        "Reference",
        "Improvement",
        "importance",
        "lower budgets",
        "crashed: 1",
        "-20.0 %",
        "knee",
    ):
        assert needle.lower() in text.lower(), needle


def test_report_json_keys_and_no_nan(report, written) -> None:
    data = report_json(report)
    required = {"pareto", "default", "improvement", "hypervolume", "importance", "reference_point"}
    assert required <= set(data)
    assert set(data["pareto"][0]) >= {"trial_id", "config", "objectives"}
    assert set(data["default"]) >= {"config", "objectives"}
    text = json.dumps(data, allow_nan=False)
    assert json.loads(written["json"].read_text()) == json.loads(text)
    assert data["pareto"][1]["config"]["odd"] is None  # NaN -> null
    assert data["reference_point"]["values"] == {"loss": 1.0, "energy_model_j": pytest.approx(11.0)}
    assert data["improvement"]["best_loss_reduction"]["trial_id"] == 5
    assert data["knee"]["trial_id"] == 5
    assert [e["trial_id"] for e in data["lower_budget"]] == [4]


def test_report_json_of_an_empty_run() -> None:
    data = report_json(build_report([], objective_names=NAMES, max_budget=9))
    assert data["pareto"] == [] and data["default"] is None and data["knee"] is None
    json.dumps(data, allow_nan=False)


def test_degenerate_reports_still_render(tmp_path) -> None:
    empty = build_report([record(1, cfg("A"), 9, TrialStatus.CRASHED)], objective_names=NAMES, max_budget=9)
    paths = write_report(empty, tmp_path / "empty")
    assert all(p.stat().st_size > 0 for p in paths.values())
    three = build_report(
        [
            record(1, cfg("A"), 9, objectives={**lo(0.1, 1.0), "latency_ms": 3.0}),
            record(2, cfg("B"), 3, objectives={**lo(0.2, 0.5), "latency_ms": 1.0}),
        ],
        objective_names=(*NAMES, "latency_ms"),
        max_budget=9,
        reference_point=[1, 2, 4],
    )
    paths = write_report(three, tmp_path / "three")
    assert paths["pareto"].read_bytes().startswith(PNG_MAGIC)


def test_objective_labels_carry_units() -> None:
    assert objective_label("energy_model_j") == "energy model [J]"
    assert objective_label("latency_ms") == "latency [ms]"
    assert objective_label("size_bits") == "size [bits]"
    assert objective_label("emissions_measured_kg") == "emissions measured [kg]"
    assert "accuracy" in objective_label("loss")


def test_write_comparison(report, tmp_path) -> None:
    other = build_report(
        [
            record(1, cfg("default"), 9, objectives=lo(0.1, 10.0), is_default=True),
            record(2, cfg("Z"), 9, objectives=lo(0.05, 9.0)),
        ],
        objective_names=NAMES,
        max_budget=9,
    )
    comparison = compare_runs([("smac <mo>", report), ("random", other)])
    paths = write_comparison(comparison, tmp_path / "cmp" / "comparison.html")
    assert paths["figure"].read_bytes().startswith(PNG_MAGIC)
    with paths["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["smac <mo>", "random"]
    assert [r["trials"] for r in rows] == ["10", "2"]
    # Same default energy in both runs, so the common reference is (1, 11): 0.91*3 + 0.85*4 and 0.95*2.
    assert comparison.comparable
    assert [float(r["final_hypervolume"]) for r in rows] == pytest.approx([6.13, 1.9])
    text = paths["html"].read_text()
    assert "smac &lt;mo&gt;" in text and "<mo>" not in text and "data:image/png;base64," in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian chromium is not installed")
def test_html_renders_headless(written, tmp_path) -> None:
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            written["html"].as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=50,
    )
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_number_formats() -> None:
    from greenshift.report.format import number_text, objective_label, objective_text, percent_text, si

    assert si(2.5e-6, "J") == "2.5 µJ" and si(0, "J") == "0 J" and si(3e-18, "J") == "3e-18 J"
    assert objective_text("loss", 0.123456) == "0.1235"
    assert objective_text("energy_model_j", 1.5e-3) == "1.5 mJ"
    assert objective_text("emissions_measured_kg", 2e-6) == "2 mg"
    assert objective_text("latency_ms", 12.345678) == "12.35 ms"
    assert objective_text("size_bits", 1234567.0) == "1,234,567"
    assert objective_text("loss", float("nan")) == "—" and objective_text("loss", None, missing="-") == "-"
    assert number_text(1 / 3) == "0.3333" and number_text(None) == "—" and number_text(7) == "7"
    assert percent_text(-12.34) == "-12.3 %" and percent_text(None, missing="-") == "-"
    assert (
        objective_label("energy_model_j") == "energy model [J]"
        and objective_label("latency_ms") == "latency [ms]"
    )
