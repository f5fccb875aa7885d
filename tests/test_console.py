"""The web console, end to end in headless Chromium: a real server on 127.0.0.1, a real face
taught through the file input, another photo of the same person identified and drawn; the few-shot
loop (an unknown face of an identify answer clicked, named, recognised in the next photo; a match
corrected), people's face thumbnails and the calibration report. Screenshots go to tests/artifacts/
(ignored by git: each run makes them)."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.config import Settings
from service.recognizer import Engine
from tests.conftest import FACES, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
KEY = "console-key"


def _require_browser() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must have chromium and chromium-driver (scripts/test.sh installs them)")
    pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_browser()
    try:
        import selenium  # noqa: F401 - installed by requirements-dev.txt
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("selenium not installed (pip install -r requirements-dev.txt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager download anything
    profile = tempfile.mkdtemp(prefix="fewface-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Server:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._server = make_server("127.0.0.1", 0, create_app(settings, engine), threaded=True)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_status(driver: Any, contains: str, timeout: float = 90) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: contains in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text


def test_console_teaches_and_identifies_a_real_face(browser: Any, engine: Engine, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"))
    with Server(settings, engine) as server:
        browser.get(server.base + "/")
        wait_status(browser, "Ready", 30)
        browser.find_element(By.ID, "teach-name").send_keys("Person Zero")
        browser.find_element(By.ID, "teach-files").send_keys(str(FACES / "img27.jpg"))
        browser.find_element(By.ID, "teach-btn").click()
        assert "person-zero" in wait_status(browser, "Taught")
        rows = browser.find_elements(By.CSS_SELECTOR, "#people tr")
        assert [r.get_attribute("data-person-id") for r in rows] == ["person-zero"]

        browser.find_element(By.ID, "identify-file").send_keys(str(FACES / "img28.jpg"))
        browser.find_element(By.ID, "identify-btn").click()
        assert "Person Zero" in wait_status(browser, "face(s)")
        items = browser.find_elements(By.CSS_SELECTOR, "#identify-results li.matched")
        assert len(items) == 1 and "Person Zero" in items[0].text
        canvas = browser.find_element(By.ID, "identify-canvas")
        assert canvas.get_attribute("data-labels") == "Person Zero"
        # the box is really drawn: the middle of its left edge has the "matched" green
        rgba = browser.execute_script(
            "const c = document.getElementById('identify-canvas'); const [x, y, w, h] = JSON.parse(c.dataset.boxes)[0];"
            "return Array.from(c.getContext('2d').getImageData(Math.round(x), Math.round(y + h / 2), 1, 1).data);"
        )
        assert rgba[1] > 140 and rgba[1] > rgba[0] + 60 and rgba[1] > rgba[2] + 40, rgba
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "console.png"))

        # rename from the people table
        name_input = browser.find_element(By.CSS_SELECTOR, "#people tr input.person-name")
        name_input.clear()
        name_input.send_keys("Person 0")
        browser.find_element(By.CSS_SELECTOR, "#people tr button.person-rename").click()
        wait_status(browser, "Renamed")
        assert server.base and create_app(settings, engine).test_client().get("/v1/people/person-zero").json["person"]["name"] == "Person 0"


def test_console_with_an_api_key(browser: Any, engine: Engine, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), api_key=KEY)
    with Server(settings, engine) as server:
        browser.get(server.base + "/")
        browser.execute_script("localStorage.clear()")
        browser.get(server.base + "/")  # the page itself loads without credentials ...
        assert "unauthorized" in wait_status(browser, "unauthorized", 30)  # ... its API calls do not
        browser.find_element(By.ID, "api-key").send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#auth-form button").click()
        wait_status(browser, "Ready", 30)
        assert "dlib-resnet-v1" in browser.find_element(By.ID, "model").text


def save_page(driver: Any, path: Path) -> None:
    """A PNG of the whole page, beyond the window's height."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def identify(driver: Any, photo: Path) -> list[Any]:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "identify-file")
    field.clear()
    field.send_keys(str(photo))
    driver.execute_script("document.getElementById('status').textContent = ''")
    driver.find_element(By.ID, "identify-btn").click()
    wait_status(driver, "face(s)")
    return driver.find_elements(By.CSS_SELECTOR, "#identify-results li")


def click_face(driver: Any, index: int) -> None:
    """A real mouse click on the middle of face ``index``'s box on the canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "identify-canvas")
    x, y, w, h = driver.execute_script("return JSON.parse(document.getElementById('identify-canvas').dataset.boxes)")[index]
    scale = canvas.rect["width"] / int(canvas.get_attribute("width"))
    dx = (x + w / 2) * scale - canvas.rect["width"] / 2  # offsets are from the element's centre
    dy = (y + h / 2) * scale - canvas.rect["height"] / 2
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)).click().perform()


def loaded_thumbnails(driver: Any, person_id: str) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`#people tr[data-person-id='${arguments[0]}'] img.thumb`))"
        ".filter((i) => i.complete && i.naturalWidth > 0).length",
        person_id,
    )


def people_counts(driver: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#people tr")
    return {r.get_attribute("data-person-id"): r.find_element(By.CSS_SELECTOR, ".count").text for r in rows}


def test_console_closes_the_few_shot_loop(browser: Any, engine: Engine, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), api_key=KEY)  # thumbnails and plot fetched with the key
    with Server(settings, engine) as server:
        browser.get(server.base + "/")
        browser.execute_script(f"localStorage.setItem('fewface.apiKey', '{KEY}')")
        browser.get(server.base + "/")
        wait_status(browser, "Ready", 30)

        # the calibration section says why there is no report yet
        browser.find_element(By.ID, "calibration-load").click()
        wait_status(browser, "not enough examples")
        summary = browser.find_element(By.ID, "calibration-summary")
        assert summary.get_attribute("data-state") == "not_enough_examples" and "Not enough data" in summary.text
        assert not browser.find_element(By.ID, "calibration-plot").is_displayed()

        # an unknown face: click it on the photo, name it; no photo is uploaded again
        items = identify(browser, FACES / "img1.jpg")
        assert len(items) == 1 and "unknown" in items[0].get_attribute("class")
        click_face(browser, 0)
        selected = browser.find_element(By.CSS_SELECTOR, "#identify-results li.selected input.face-name")
        assert browser.switch_to.active_element == selected  # the click put the cursor in that face's name field
        selected.send_keys("Ada Lovelace")
        browser.find_element(By.CSS_SELECTOR, "#identify-results li.selected button.face-teach").click()
        assert "Ada Lovelace (ada-lovelace)" in wait_status(browser, "Taught this face")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "identify-canvas").get_attribute("data-labels") == "Ada Lovelace")
        WebDriverWait(browser, 30).until(lambda d: loaded_thumbnails(d, "ada-lovelace") == 1)

        # the next photo of her is named
        items = identify(browser, FACES / "img2.jpg")
        assert len(items) == 1 and "matched" in items[0].get_attribute("class") and "Ada Lovelace" in items[0].text
        save_page(browser, ARTIFACTS / "console-named.png")

        # a slip: a face of someone else named "Ada Lovelace" (an existing person, found by name) ...
        items = identify(browser, FACES / "img47.jpg")
        assert "unknown" in items[0].get_attribute("class")
        items[0].find_element(By.CSS_SELECTOR, "input.face-name").send_keys("Ada Lovelace")
        items[0].find_element(By.CSS_SELECTOR, "button.face-teach").click()
        assert "Ada Lovelace (ada-lovelace)" in wait_status(browser, "Taught this face")
        WebDriverWait(browser, 30).until(lambda d: loaded_thumbnails(d, "ada-lovelace") == 2)
        # ... makes a wrong match; correct it: the face is taught to the right person, Ada keeps hers
        items = identify(browser, FACES / "img48.jpg")
        assert "matched" in items[0].get_attribute("class") and "Ada Lovelace" in items[0].text
        items[0].find_element(By.CSS_SELECTOR, "input.face-name").send_keys("Alan Turing")
        items[0].find_element(By.CSS_SELECTOR, "button.face-teach").click()
        status = wait_status(browser, "Taught this face")
        assert "Alan Turing (alan-turing)" in status and "was matched with Ada Lovelace" in status, status
        WebDriverWait(browser, 30).until(lambda d: loaded_thumbnails(d, "alan-turing") == 1)
        assert people_counts(browser) == {"ada-lovelace": "2", "alan-turing": "1"}
        # and the wrong example goes: click its thumbnail, confirm
        wrong = browser.find_elements(By.CSS_SELECTOR, "#people tr[data-person-id='ada-lovelace'] img.thumb")[-1]
        wrong_id = wrong.get_attribute("data-face-id")
        wrong.click()
        browser.switch_to.alert.accept()
        wait_status(browser, f"Deleted example {wrong_id} of ada-lovelace")
        assert people_counts(browser) == {"ada-lovelace": "1", "alan-turing": "1"}
        items = identify(browser, FACES / "img49.jpg")
        assert "matched" in items[0].get_attribute("class") and "Alan Turing" in items[0].text

        # more photos through the teach form (existing people by name, one new): the calibration report renders
        for name, photos in (
            ("Ada Lovelace", ["img4.jpg"]),
            ("Alan Turing", ["img50.jpg"]),
            ("Katherine Johnson", ["img12.jpg", "img3.jpg"]),
        ):
            browser.find_element(By.ID, "teach-name").clear()
            browser.find_element(By.ID, "teach-name").send_keys(name)
            browser.find_element(By.ID, "teach-files").clear()
            browser.find_element(By.ID, "teach-files").send_keys("\n".join(str(FACES / p) for p in photos))
            browser.find_element(By.ID, "teach-btn").click()
            wait_status(browser, f"Taught {name}")
        WebDriverWait(browser, 30).until(lambda d: loaded_thumbnails(d, "katherine-johnson") == 2)
        assert people_counts(browser) == {"ada-lovelace": "2", "alan-turing": "2", "katherine-johnson": "2"}
        assert loaded_thumbnails(browser, "ada-lovelace") == 2 and loaded_thumbnails(browser, "alan-turing") == 2
        browser.find_element(By.ID, "calibration-load").click()
        wait_status(browser, "Calibration report loaded")
        plot = browser.find_element(By.ID, "calibration-plot")
        assert plot.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", plot) > 300
        assert plot.get_attribute("src").startswith("blob:")
        assert "Equal error rate" in browser.find_element(By.ID, "calibration-summary").text
        save_page(browser, ARTIFACTS / "console-loop.png")
