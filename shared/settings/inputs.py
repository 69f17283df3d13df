"""Settings of inputs given by reference: `path` (the data root) and `image_url` (fetches)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings.group import SettingsGroup


class InputSettings(SettingsGroup):
    # Inputs given by reference (image pipelines)
    data_root: Path | None = Field(
        default=None,
        description=(
            "Folder whose files and subfolders jobs may name as `path` inputs; unset: `path` inputs are refused."
        ),
    )
    fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline of one `image_url` fetch, redirects and body included."
    )
    fetch_allow_private: bool = Field(
        default=False,
        description="Let `image_url` reach loopback, private, link-local and other internal addresses.",
    )
    fetch_max_redirects: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Redirects an `image_url` fetch follows, each checked again (0: none).",
    )
