"""The console with API keys set (DLPIPE_API_KEYS): without a key it shows the prompt, not a
broken page; with a key it shows that key's jobs only, and another key's job is not there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.e2e.console_browser import (
    browser_for,
    css,
    one,
    open_view,
    screenshots,
    skip_without_browser,
    wait,
)

pytestmark = [pytest.mark.e2e, skip_without_browser()]

KEY_A = "console-key-a"
KEY_B = "console-key-b"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("keyed"), {"DLPIPE_API_KEYS": f"{KEY_A},{KEY_B}"})
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser_for() as d:
        yield d


def submit_text(stack: Stack, key: str, text: str) -> str:
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.base_url, timeout=60, headers=auth) as client:
        answer = client.post("/v1/pipelines/text-embed/jobs", json={"inputs": [{"text": text}]})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


@pytest.mark.parametrize("view", ["submit", "jobs", "system"])
def test_no_key_gives_the_prompt(driver: Any, keyed: Stack, view: str) -> None:
    open_view(driver, keyed.base_url, view)
    prompt = wait(driver, lambda d: (p := one(d, "#auth-prompt")).is_displayed() and p, "the key prompt")
    assert "needs an API key" in prompt.text
    assert one(driver, "#api-key").get_attribute("aria-invalid") == "true"
    if view == "submit":
        screenshots(driver, "key-prompt")


def test_a_wrong_key_gives_the_prompt_and_a_right_one_clears_it(driver: Any, keyed: Stack) -> None:
    open_view(driver, keyed.base_url, "jobs", key="not-a-key")
    wait(driver, lambda d: one(d, "#auth-prompt").is_displayed(), "the key prompt")
    field = one(driver, "#api-key")
    field.clear()
    field.send_keys(KEY_A)
    one(driver, "#key-form button[type=submit]").click()
    wait(driver, lambda d: not one(d, "#auth-prompt").is_displayed(), "the prompt gone")
    assert driver.execute_script("return sessionStorage.getItem('dlpipe.apiKey')") == KEY_A


def test_a_key_only_ever_shows_its_own_jobs(driver: Any, keyed: Stack) -> None:
    mine = submit_text(keyed, KEY_A, "mine")
    theirs = submit_text(keyed, KEY_B, "theirs")
    open_view(driver, keyed.base_url, "jobs", key=KEY_A)
    wait(driver, lambda d: css(d, f"tr[data-id='{mine}']"), "my job listed")
    assert not css(driver, f"tr[data-id='{theirs}']")
    open_view(driver, keyed.base_url, f"job/{mine}", key=KEY_A)
    # live to its end: the event stream took the key (?access_token=)
    wait(driver, lambda d: "succeeded" in one(d, ".job-status").text, "my job's end")
    open_view(driver, keyed.base_url, f"job/{theirs}", key=KEY_A)
    error = wait(driver, lambda d: (e := one(d, ".job .form-status.error")).text and e, "their job refused")
    assert "no job" in error.text
    assert not css(driver, ".output")
    open_view(driver, keyed.base_url, "jobs", key=KEY_B)
    wait(driver, lambda d: css(d, f"tr[data-id='{theirs}']"), "their job listed for their key")
    assert not css(driver, f"tr[data-id='{mine}']")


def test_the_stack_is_keyed(keyed: Stack, tmp_path: Path) -> None:
    assert httpx.get(f"{keyed.base_url}/v1/jobs", timeout=10).status_code == 401
    assert httpx.get(f"{keyed.base_url}/ui/", timeout=10).status_code == 200
