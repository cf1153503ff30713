"""report.html in a real browser (Debian's chromium, which `.ci/run` installs in CI).

The page is loaded through a copy with a small probe script injected at the top of its head: the
probe records every error event (script errors, and in the capture phase resources that fail to
load) and every ``console.error``, and after ``load`` writes what the page shows (decoded images,
tables, resources fetched) into the DOM, which ``--dump-dom`` prints. Host names resolve to nothing,
so a page that needed the network would fail to load the resource and the probe would see it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from greenshift.report import write_report
from greenshift.report.data import build_report
from test_report import NAMES, synthetic_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (event) {
  var target = event.target || {};
  window.__errors.push(event.message || ("failed to load " + (target.src || target.href || target.tagName)));
}, true);
var originalError = console.error;
console.error = function () {
  window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
  originalError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var result = {
    errors: window.__errors,
    images: images.map(function (img) { return [img.complete, img.naturalWidth, img.naturalHeight]; }),
    tables: Array.prototype.map.call(document.querySelectorAll("table"), function (t) { return t.rows.length; }),
    resources: performance.getEntriesByType("resource").map(function (r) { return r.name; }),
    text: document.body.innerText
  };
  var out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def browser_check(html: Path) -> dict:
    """Load ``html`` with the probe in headless chromium; what the probe saw."""
    page = html.read_text()
    probed = html.with_name("probed-" + html.name)
    head = re.search(r"<head[^>]*>", page)
    assert head, "report.html has a <head>"
    probed.write_text(page[: head.end()] + PROBE + page[head.end() :])
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no probe result (exit {done.returncode}): {done.stderr[-2000:]}"
    text = (
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )
    return json.loads(text)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    report = build_report(
        synthetic_records(),
        objective_names=NAMES,
        max_budget=9,
        meta={"dataset": "digits", "backbone": "resnet20"},
    )
    return write_report(report, tmp_path_factory.mktemp("report"))


def test_report_renders_its_plots_and_tables_without_errors_or_network(written) -> None:
    seen = browser_check(written["html"])
    assert seen["errors"] == []
    # the Pareto, hypervolume and importance figures, all decoded to real pictures
    assert len(seen["images"]) >= 3
    assert all(complete and width > 100 and height > 100 for complete, width, height in seen["images"])
    # the front table and the others, each with a header and rows
    assert len(seen["tables"]) >= 2 and all(rows >= 2 for rows in seen["tables"])
    assert [name for name in seen["resources"] if not name.startswith(("data:", "file:"))] == []
    for trial_id in ("3", "5", "7"):  # the front of synthetic_records
        assert re.search(rf"\b{trial_id}\b", seen["text"])


def test_the_probe_sees_a_page_that_needs_the_network(written, tmp_path) -> None:
    """The check above can fail: a page with a remote image reports the request and its failure."""
    broken = tmp_path / "report.html"
    page = written["html"].read_text()
    broken.write_text(page.replace("</body>", '<img src="https://example.org/plot.png"></body>'))
    seen = browser_check(broken)
    assert any("example.org" in name for name in seen["resources"])
    assert any("example.org" in error for error in seen["errors"])
    assert any(width == 0 for _, width, _ in seen["images"])
