"""The report in a real browser: headless Chromium loads it, every image decodes, a screenshot is taken."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slimgen.models import ModelBundle, save_folder
from slimgen.pipeline import compress, parse_recipe
from tests.conftest import needs_fmnist

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make setup installs it)")
pytestmark = [
    needs_fmnist,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason="Chromium/ChromeDriver not installed (apt-get install chromium chromium-driver; make test does it)"),
]

RECIPE = """teacher: {teacher}
steps:
  - prune_magnitude: {{sparsity: 0.5}}
  - prune_channels: {{ratio: 0.5}}
evaluate: {{n: 64}}
"""


def _browser(profile: Path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,2400"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


def test_report_renders_in_chromium(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    out = tmp_path / "run"
    compress(parse_recipe(RECIPE.format(teacher=teacher), source="tiny.yaml"), out=out)
    driver = _browser(tmp_path / "profile")
    try:
        driver.get((out / "report.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        text = driver.find_element("tag name", "body").text
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    # 3 Pareto plots (FID vs MACs, bytes, latency) and one sample grid per step, all decoded
    assert len(images) == 3 + 3, images
    assert all(complete and w > 0 and h > 0 for _, complete, w, h in images), images
    for step in ("00-teacher", "01-prune_magnitude", "02-prune_channels"):
        assert step in text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
