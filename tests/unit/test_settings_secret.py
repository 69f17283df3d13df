"""The webhook secret setting: empty means unset (compose passes unset host variables as '')."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_an_empty_webhook_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPIPE_WEBHOOK_SECRET", "")
    assert Settings().webhook_secret is None


def test_a_malformed_webhook_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPIPE_WEBHOOK_SECRET", "not-a-secret")
    with pytest.raises(ValidationError, match="whsec_"):
        Settings()
