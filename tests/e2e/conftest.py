"""Fixtures that run the real server (subprocess) for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from tests.e2e.server import RunningServer


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server with no configuration at all: the default local model, SQLite."""
    data_dir: Path = tmp_path_factory.mktemp("server")
    with RunningServer(data_dir, env={"MODELPORT_KEY_CACHE_TTL": "0"}) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    # Closed after each test: a socket left for the garbage collector fails whichever test it
    # is collected in (filterwarnings = error).
    with openai.OpenAI(
        base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0
    ) as sdk:
        yield sdk
