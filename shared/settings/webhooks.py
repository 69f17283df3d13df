"""Settings of webhooks: the notifier's timeouts, retries, signing secret, concurrency; the API's
redelivery interval."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator

from shared.settings.group import SettingsGroup

# Standard Webhooks' spirit: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 h in all)
DEFAULT_WEBHOOK_RETRY_SCHEDULE_S = "0,5,300,1800,7200,18000,36000,36000"
WEBHOOK_SECRET_PREFIX = "whsec_"


def parse_delays(text: str) -> tuple[float, ...]:
    """'0,5,300' -> (0.0, 5.0, 300.0): one delay per attempt, in seconds, each >= 0, at least one."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        delays = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated seconds, like 0,5,300") from None
    if not delays or any(d < 0 or d != d or d == float("inf") for d in delays):
        raise ValueError(f"{text!r}: every delay must be a finite number of seconds >= 0")
    return delays


def check_webhook_secret(value: str) -> str:
    """A Standard Webhooks secret: `whsec_` then base64 of 24 to 64 bytes."""
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX!r} (then base64 of 24 to 64 random bytes)")
    try:
        key = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not valid base64 after {WEBHOOK_SECRET_PREFIX!r}") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key is {len(key)} bytes; use 24 to 64 random bytes")
    return value


class WebhookSettings(SettingsGroup):
    # Notifier
    webhook_timeout_s: float = Field(default=15.0, gt=0, description="Timeout of one webhook attempt.")
    webhook_retry_schedule_s: str = Field(
        default=DEFAULT_WEBHOOK_RETRY_SCHEDULE_S,
        description="Delay before each webhook attempt, in seconds, comma-separated (one per attempt).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Signing secret of webhooks (`whsec_` + base64 of 24-64 random bytes); unset: "
            "`dlpipe up` makes one in the data dir, a notifier without one sends nothing."
        ),
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private, link-local and other internal addresses.",
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=256, description="Webhook deliveries the notifier makes at once (threads)."
    )
    # API
    webhook_redeliver_interval_s: float = Field(
        default=5.0,
        ge=0,
        le=86400,
        description=(
            "Least time between two redeliveries of one job's webhook (`POST /v1/jobs/{id}/webhook/"
            "redeliver`), in seconds: sooner gets 429 with `Retry-After`; 0: no limit."
        ),
    )

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_delays(value)
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        """`DLPIPE_WEBHOOK_SECRET=` (as compose passes an unset host variable) means no secret."""
        return None if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_webhook_secret(value.get_secret_value())
        return value

    @property
    def webhook_delays_s(self) -> tuple[float, ...]:
        """The delay before each webhook attempt (the first: usually 0); as many as attempts."""
        return parse_delays(self.webhook_retry_schedule_s)
