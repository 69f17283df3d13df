"""The base of every group of settings: the one model config (DLPIPE_* variables).

`Settings` (shared/settings/__init__.py) inherits every group; the groups only keep the fields
of one concern apart, each in a module of its own.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsGroup(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLPIPE_", extra="ignore")
