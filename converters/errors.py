"""Exceptions of the converter pipeline (parity, accuracy guard, missing TensorRT)."""

from __future__ import annotations

from edge_lstm.errors import EdgeLstmError


class ConverterError(EdgeLstmError):
    """A conversion step cannot be done or its result failed a check."""
