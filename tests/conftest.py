"""Fixtures: a node on SQLite and PostgreSQL, dcmtk present, a Redis queue of the test's own,
the tiny diffusion pipeline. Helpers they use live in tests/support."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scp_node.config import CompressionConfig, LdmConfig
from tests.support import (
    REDIS_URL,
    RunningNode,
    make_config,
    require,
    start_node,
    temporary_database,
)

if TYPE_CHECKING:
    from scp_node.imaging.codecs import SiteCodecs


@pytest.fixture(scope="session")
def dcmtk() -> None:
    require(shutil.which("storescu") is not None, "dcmtk (storescu, getscu) is not installed")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with temporary_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def redis_queue_name() -> Iterator[str]:
    """An RQ queue name of the test's own on the Redis at REDIS_URL; its keys go afterwards."""
    from redis import Redis

    try:
        Redis.from_url(REDIS_URL).ping()
    except Exception as exc:
        require(False, f"Redis at {REDIS_URL} unavailable: {exc}")
    name = f"scp-test-{uuid.uuid4().hex[:10]}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    for key in redis.scan_iter(f"rq:*{name}*"):
        redis.delete(key)


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[RunningNode]:
    running = start_node(make_config(tmp_path, database_url))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tiny_ldm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StableDiffusionLatentUpscalePipeline saved in diffusers' layout."""
    from scp_node.research.tiny_pipeline import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-ldm"))


@pytest.fixture
def ldm_codecs(tiny_ldm_dir: Path) -> SiteCodecs:
    """A site's codecs with the tiny pipeline as compression.ldm.weights_dir."""
    from scp_node.imaging.codecs import SiteCodecs

    return SiteCodecs(CompressionConfig(ldm=LdmConfig(weights_dir=tiny_ldm_dir)))
