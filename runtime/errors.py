"""Exceptions of the on-device runtime; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """A user-fixable problem on the gateway: bad config, bad deployment folder, no broker."""


class ManifestError(EdgeRuntimeError):
    """The deployment folder's manifest is missing, invalid, or does not match its files."""


class BackendError(EdgeRuntimeError):
    """An inference backend cannot load or run the model."""


class ConfigError(EdgeRuntimeError):
    """The gateway config has a missing, unknown or impossible key."""
