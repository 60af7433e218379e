"""Sensor logs → validated readings → labelled windows split by run."""

from edge_lstm.data.normalization import Normalization
from edge_lstm.data.prepare import PreparedData, prepare_data
from edge_lstm.data.windows import WindowSet

__all__ = ["Normalization", "PreparedData", "WindowSet", "prepare_data"]
