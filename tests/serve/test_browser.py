"""``ddpm serve`` end to end in a real headless browser (Debian's chromium and chromedriver, driven by
Selenium): pick a run, sample, see frames before the grid, download the PNG, paint a mask and inpaint,
and see the error for a bad upload; sample a ControlNet run from a real image's control and from a
drawing. Skipped where chromium is absent; .ci/run installs it.

``DDPM_SERVE_SCREENSHOT=docs/img/serve.png pytest tests/serve/test_browser.py`` also keeps the screenshot
(``DDPM_SERVE_CONTROL_SCREENSHOT=FILE.png`` the control run's).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ddpm.serve.catalog import RunCatalog
from ddpm.serve.jobs import JobQueue
from ddpm.serve.work import split_grid

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 120


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1500,1250", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def wait(driver: webdriver.Chrome, condition: Callable[[Any], Any], timeout_s: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: condition(d))


def set_value(driver: webdriver.Chrome, element_id: str, value: object) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))


def open_page(driver: webdriver.Chrome, url: str, run_name: str) -> None:
    driver.get(url)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#run option")) >= 2)
    Select(driver.find_element(By.ID, "run")).select_by_visible_text(run_name)
    wait(driver, lambda d: run_name in d.find_element(By.ID, "run").get_attribute("innerHTML"))


def sample(driver: webdriver.Chrome, downloads: Path, n: int) -> None:
    """Sample ``n`` images with DDIM; frames must arrive before the grid; download the grid."""
    Select(driver.find_element(By.ID, "sampler")).select_by_value("ddim")
    set_value(driver, "steps", 40)
    set_value(driver, "n", n)
    driver.find_element(By.ID, "sample-button").click()
    wait(driver, lambda d: d.find_element(By.ID, "sample-download").is_displayed())
    kinds = [e["type"] for e in driver.execute_script("return window.ddpmEvents")]
    assert "frame" in kinds and kinds.index("frame") < kinds.index("done")
    assert kinds.count("frame") >= 3
    assert driver.execute_script("return document.getElementById('frame-x0').naturalWidth") > 0
    assert driver.execute_script("return document.getElementById('sample-result').naturalWidth") > 0
    assert driver.find_element(By.ID, "sample-status").text == f"done: {n} images"
    driver.find_element(By.ID, "sample-download").click()
    wait(driver, lambda _: any(p.suffix == ".png" for p in downloads.iterdir()), 30)
    png = next(p for p in downloads.iterdir() if p.suffix == ".png")
    wait(driver, lambda _: png.stat().st_size > 0 and not list(downloads.glob("*.crdownload")), 30)
    assert len(split_grid(png.read_bytes())) == n


def paint_and_inpaint(driver: webdriver.Chrome) -> None:
    """Pick the first real image, paint across the top of the canvas, inpaint 4 fills."""
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#real-images img"))
    driver.find_element(By.CSS_SELECTOR, "#real-images img").click()
    canvas = driver.find_element(By.ID, "mask-canvas")
    strokes = ActionChains(driver).move_to_element_with_offset(canvas, -100, -90).click_and_hold()
    for x in range(-100, 101, 20):
        strokes = strokes.move_to_element_with_offset(canvas, x, -90)
        strokes = strokes.move_to_element_with_offset(canvas, x, -40)
    strokes.release().perform()
    set_value(driver, "inpaint-steps", 20)
    driver.find_element(By.ID, "inpaint-button").click()
    wait(driver, lambda d: d.find_element(By.ID, "inpaint-download").is_displayed())
    assert driver.find_element(By.ID, "inpaint-error").text == ""
    assert driver.find_element(By.ID, "inpaint-status").text == "done: 4 images"
    assert driver.execute_script("return document.getElementById('inpaint-result').naturalWidth") > 0


def test_the_page_samples_inpaints_and_reports_a_bad_upload(
    browser: webdriver.Chrome,
    live_server: tuple[str, JobQueue],
    catalog: RunCatalog,
    downloads: Path,
    tmp_path: Path,
) -> None:
    url, _ = live_server
    open_page(browser, url, "digits")
    assert "steps trained" in browser.find_element(By.ID, "run-info").text
    wait(browser, lambda d: d.execute_script("return document.getElementById('curves').naturalWidth") > 0)
    sample(browser, downloads, n=6)
    paint_and_inpaint(browser)
    screenshot = tmp_path / "serve.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("DDPM_SERVE_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["DDPM_SERVE_SCREENSHOT"])
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    browser.find_element(By.ID, "upload").send_keys(str(bad))
    browser.find_element(By.ID, "inpaint-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "inpaint-error").text, 30)
    assert browser.find_element(By.ID, "inpaint-error").text.startswith("upload 'notes.txt' is not an image")
    time.sleep(0.2)
    assert not browser.get_log("browser") or all(
        "notes.txt" in entry["message"] or "400" in entry["message"] for entry in browser.get_log("browser")
    )


def image_shown(driver: webdriver.Chrome, element_id: str) -> bool:
    return driver.execute_script(f"return document.getElementById('{element_id}').naturalWidth") > 0


def sample_with_control(driver: webdriver.Chrome, done: int) -> None:
    """Press Sample and wait for the ``done``-th finished job: 4 images, the control shown beside them."""
    driver.find_element(By.ID, "sample-button").click()
    wait(
        driver,
        lambda d: [e["type"] for e in d.execute_script("return window.ddpmEvents")].count("done") == done,
    )
    assert driver.find_element(By.ID, "sample-error").text == ""
    assert driver.find_element(By.ID, "sample-status").text == "done: 4 images"
    wait(driver, lambda d: image_shown(d, "sample-result") and image_shown(d, "sample-control"), 30)
    assert driver.find_element(By.ID, "control-figure").is_displayed()


def test_the_page_samples_a_control_run_from_a_real_images_control_and_from_a_drawing(
    browser: webdriver.Chrome, control_live_server: tuple[str, JobQueue]
) -> None:
    url, _ = control_live_server
    open_page(browser, url, "canny")
    assert "ControlNet, Canny edges, over base base" in browser.find_element(By.ID, "run-info").text
    assert browser.find_element(By.ID, "control-note").text.startswith("No control image: Sample draws with")
    first = "return document.querySelector('#control-reals img')?.naturalWidth"
    wait(browser, lambda d: (d.execute_script(first) or 0) > 0, 30)
    browser.find_element(By.CSS_SELECTOR, "#control-reals img").click()
    assert (
        browser.find_element(By.ID, "control-note").text == "Control: the Canny edges of real test image 0."
    )
    browser.execute_script("const s = document.getElementById('control-scale'); s.value = '0.5';"
                           "s.dispatchEvent(new Event('input'));")  # fmt: skip
    assert browser.find_element(By.ID, "control-scale-value").text == "0.5"
    set_value(browser, "steps", 8)
    set_value(browser, "n", 4)
    sample_with_control(browser, done=1)
    real_control = browser.find_element(By.ID, "sample-control").get_attribute("src")
    canvas = browser.find_element(By.ID, "control-canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -80, 0).click_and_hold().move_by_offset(
        160, 0).release().perform()  # fmt: skip
    assert browser.find_element(By.ID, "control-note").text.startswith("Control: your drawing")
    sample_with_control(browser, done=2)
    assert browser.find_element(By.ID, "sample-control").get_attribute("src") != real_control  # the drawing
    if os.environ.get("DDPM_SERVE_CONTROL_SCREENSHOT"):
        browser.save_screenshot(os.environ["DDPM_SERVE_CONTROL_SCREENSHOT"])
    errors = [
        e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]
    ]
    assert not errors
    Select(browser.find_element(By.ID, "run")).select_by_visible_text("mask-concat")
    wait(browser, lambda d: "concat run, foreground mask" in d.find_element(By.ID, "run-info").text, 30)
    assert not browser.find_element(By.ID, "control-scale-label").is_displayed()  # a concat run has no scale
