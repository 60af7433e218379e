"""Runtime fixtures: tiny deployment folders (GRU/LSTM, hop < W and hop = W) and a Mosquitto
broker on 127.0.0.1 with persistence, shared by the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_lstm.local_broker import LocalBroker, find_mosquitto


@pytest.fixture(scope="session")
def deploy_dir(tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """deploy_dir(cell, hop, window_stats) -> a deployment folder of an untrained tiny student
    (cached)."""
    from tests.helpers_deploy import make_tiny_deploy_dir

    made: dict[tuple[str, int | None, bool], Path] = {}

    def get(cell: str = "gru", hop: int | None = None, window_stats: bool = False) -> Path:
        key = (cell, hop, window_stats)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"deploy-{cell}-{hop}-{int(window_stats)}")
            made[key] = make_tiny_deploy_dir(
                folder, tiny_config, cell=cell, hop=hop, window_stats=window_stats
            )
        return made[key]

    return get


@pytest.fixture(scope="session")
def session_broker(tmp_path_factory: pytest.TempPathFactory):
    if find_mosquitto() is None:
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    broker = LocalBroker(persistence_dir=tmp_path_factory.mktemp("mosquitto"))
    with broker:
        yield broker


@pytest.fixture
def broker(session_broker: LocalBroker) -> LocalBroker:
    """The session broker, (re)started if a previous test left it stopped."""
    if not session_broker.running:
        session_broker.start()
    return session_broker
