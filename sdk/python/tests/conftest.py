from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from vevee import Vevee

from .support import SECRET_KEY, RunningServer, start_server


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    running.stop()


@pytest.fixture
def vevee(server: RunningServer) -> Iterator[Vevee]:
    with Vevee(SECRET_KEY, base_url=server.base_url) as client:
        yield client


@pytest.fixture
def user() -> str:
    """A user of this test alone, so that tests on one server do not see each other."""
    return f"u_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
