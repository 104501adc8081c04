"""report --html: a page that a real headless browser renders, with its plots as SVG in the
DOM, and nothing it could fetch from the network."""

import re
import shutil
import subprocess

import pytest

from ...conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def browser(tmp_path, *arguments) -> subprocess.CompletedProcess:
    profile = tmp_path / "browser-profile"
    return subprocess.run([CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}",
                           *arguments], capture_output=True, timeout=180)


@pytest.fixture
def report_page(tmp_path, make_image):
    """A repository with two series, two nights each, one failed run and a check."""
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, "--encryption", "none", check=True)
    for seed in (1, 2):
        run_cli("backup", "-r", repo, str(make_image(128 * 1024, seed=seed, name="vm1.img")),
                check=True)
        run_cli("backup", "-r", repo, str(make_image(64 * 1024, seed=seed, name="db.img")),
                check=True)
    assert run_cli("backup", "-r", repo, str(tmp_path / "gone.img"), "--name",
                   "db.img").returncode == 2
    run_cli("check", "-r", repo, check=True)
    page = tmp_path / "status.html"
    run_cli("report", "-r", repo, "--html", str(page), check=True)
    return page


def test_page_is_self_contained_and_private(report_page):
    text = report_page.read_text()
    assert not re.search(r"https?://", text)  # no script, font, image or style to fetch
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert oct(report_page.stat().st_mode & 0o777) == "0o600"
    assert "gone.img" in text  # the failed run's error line


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is missing (apt-get install chromium)")
def test_page_renders_in_a_headless_browser_with_its_plots(tmp_path, report_page):
    dumped = browser(tmp_path, "--dump-dom", report_page.as_uri())
    assert dumped.returncode == 0, dumped.stderr.decode()[-2000:]
    dom = dumped.stdout.decode()
    assert dom.count("<svg") == 4  # two plots for each of the two series
    assert dom.count('<circle class="good"') == 4  # the four snapshots
    assert dom.count('<path class="bad"') == 1  # the failed backup of db.img
    assert dom.count('<rect class="stored"') == 4
    assert "passed" in dom  # the last check
    shot = tmp_path / "status.png"
    taken = browser(tmp_path, f"--screenshot={shot}", "--window-size=1200,1000",
                    report_page.as_uri())
    assert taken.returncode == 0, taken.stderr.decode()[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
