"""Fixtures of the data tests: the tiny dataset prepared once, and small editable frames."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def prepared(tiny_config):
    from edge_lstm.data import prepare_data

    return prepare_data(tiny_config)


@pytest.fixture
def small_frame() -> pd.DataFrame:
    """Nine short runs (one per class), cheap to edit into broken files."""
    from edge_lstm.simulate import generate

    return generate(seed=2, runs_per_class=1, run_length=40)
