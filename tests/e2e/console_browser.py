"""A real browser for the console's tests: Debian's chromium, headless, driven by Selenium.

One browser per test module (`browser_for(...)`), polled with WebDriverWait (never a sleep).
Missing chromium/chromedriver/selenium: the tests skip and say why (`make tools` installs the
browser as root). With DLPIPE_SCREENSHOTS=1, `screenshots(driver, name)` saves the view at a
laptop's and a phone's width under docs/console/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAPTOP = (1366, 900)
PHONE = (390, 844)
WAIT_S = 60.0


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(Path(path).name)):
            return f"{path} is missing: `apt-get install chromium chromium-driver` (make tools does, as root)"
    return None


def skip_without_browser() -> pytest.MarkDecorator:
    reason = missing()
    return pytest.mark.skipif(reason is not None, reason=f"no browser for the console tests: {reason}")


@contextmanager
def browser_for() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium") or CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        "--lang=en-US",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.unhandled_prompt_behavior = "ignore"  # an alert stays open for the test to see
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, check: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The views redraw parts of themselves: an element found a moment ago may be gone; look again.
    stale = [StaleElementReferenceException]
    waiting = WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=stale)
    return waiting.until(check, message=f"waited for {what}")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver: Any, selector: str, what: str | None = None, timeout_s: float = WAIT_S) -> Any:
    """The first element matching `selector`, once there is one."""
    return wait(driver, lambda d: (css(d, selector) or [None])[0], what or selector, timeout_s)


def open_view(driver: Any, base_url: str, view: str, key: str | None = None) -> None:
    """Open `#/<view>` on a fresh page load (the key, if any, put in sessionStorage first)."""
    driver.set_window_size(*LAPTOP)
    driver.get(f"{base_url}/ui/#/{view}")
    driver.execute_script(
        "arguments[0] ? sessionStorage.setItem('dlpipe.apiKey', arguments[0])"
        " : sessionStorage.removeItem('dlpipe.apiKey');",
        key or "",
    )
    driver.refresh()
    shown = "return document.getElementById('main').dataset.view"
    wait(driver, lambda d: d.execute_script(shown) == view.split("/")[0], f"the {view} view")


def page_errors(driver: Any) -> list[str]:
    """Severe console messages (script errors, CSP violations) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshots(driver: Any, name: str) -> list[Path]:
    """With DLPIPE_SCREENSHOTS=1: the view at laptop and phone width, whole page, as PNGs."""
    if os.environ.get("DLPIPE_SCREENSHOTS") != "1":
        return []
    SHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, (width, height) in (("laptop", LAPTOP), ("phone", PHONE)):
        driver.set_window_size(width, height)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, full + 140), 2400))
        path = SHOTS / f"{name}-{label}.png"
        driver.save_screenshot(str(path))
        saved.append(path)
    driver.set_window_size(*LAPTOP)
    return saved
