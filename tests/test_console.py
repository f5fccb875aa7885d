"""The web console, end to end in headless Chromium: a real server on 127.0.0.1, a real face
taught through the file input, another photo of the same person identified and drawn."""

from __future__ import annotations

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
