"""Exceptions of the training side; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class EdgeLstmError(Exception):
    """A user-fixable problem: bad config, bad data, missing artifact."""


class ConfigError(EdgeLstmError):
    """A config file is missing, unreadable, or has a wrong or missing key."""


class DataError(EdgeLstmError):
    """Sensor logs cannot be loaded or windowed as configured."""


class CheckpointError(EdgeLstmError):
    """A checkpoint is missing, incomplete or of the wrong kind."""
