"""Render a run's ``report.html`` with headless Chromium into a PNG, to look at the page as a person would.

    python scripts/screenshot_report.py runs/demo                  # -> runs/demo/report_screenshot.png
    python scripts/screenshot_report.py runs/demo/report.html --out page.png --height 6000

The page is self-contained (figures are embedded), so no network is needed; the browser runs with a
throwaway profile and without background networking, component updates or sync. Needs Chromium
(Debian/Ubuntu: ``apt-get install chromium``); without it the script exits with code 2 and says so.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "Chromium is not installed; install it with: apt-get install chromium"


class ScreenshotError(RuntimeError):
    """The page could not be rendered (no browser, no page, or the browser failed)."""


def find_browser(explicit: str | None = None) -> str:
    """The Chromium executable: ``explicit`` if given, else the first of :data:`BROWSERS` on the PATH."""
    if explicit:
        found = shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
        if not found:
            raise ScreenshotError(f"browser {explicit!r} not found. {INSTALL_HINT}")
        return found
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ScreenshotError(INSTALL_HINT)


def resolve_page(target: str | Path) -> Path:
    """``target`` itself if it is a file, else the ``report.html`` inside the run directory ``target``."""
    path = Path(target)
    page = path / "report.html" if path.is_dir() else path
    if not page.is_file():
        hint = " (write it first: greenshift report RUN_DIR)" if path.is_dir() else ""
        raise ScreenshotError(f"no report page at {page}{hint}")
    return page.resolve()


def screenshot(
    page: str | Path,
    out: str | Path,
    *,
    width: int = 1280,
    height: int = 3000,
    browser: str | None = None,
    timeout_s: float = 120.0,
) -> Path:
    """Render ``page`` (an HTML file) at ``width`` x ``height`` CSS pixels into the PNG ``out``.

    The picture is the top ``height`` pixels of the page (headless Chromium has no full-page mode:
    raise ``height`` for long reports; a URL fragment would scroll, but the screenshot then comes out
    blank).
    """
    executable = find_browser(browser)
    page = resolve_page(page)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a stale picture must not pass for a new one
    url = page.as_uri()
    with tempfile.TemporaryDirectory(prefix="greenshift-chromium-") as profile:
        command = [
            executable,
            "--headless",
            "--no-sandbox",  # root in containers cannot use Chromium's sandbox
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={int(width)},{int(height)}",
            url,
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"{executable} did not finish within {timeout_s:g} s") from None
    if result.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
        raise ScreenshotError(f"{executable} exited with code {result.returncode} and wrote no PNG:\n{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 done, 2 could not render)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a run directory (uses its report.html) or an HTML file")
    parser.add_argument("--out", help="PNG to write (default: report_screenshot.png next to the page)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    parser.add_argument("--height", type=int, default=3000, help="window height in CSS pixels (default 3000)")
    parser.add_argument("--browser", help="Chromium executable (default: chromium on the PATH)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the browser")
    args = parser.parse_args(argv)
    try:
        page = resolve_page(args.target)
        out = Path(args.out) if args.out else page.with_name("report_screenshot.png")
        path = screenshot(
            page,
            out,
            width=args.width,
            height=args.height,
            browser=args.browser,
            timeout_s=args.timeout,
        )
    except ScreenshotError as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
