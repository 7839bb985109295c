"""Qdrant: a server (URL and API key) or qdrant-client's embedded local mode on disk."""

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from qdrant_client import QdrantClient


class QdrantResource(dg.ConfigurableResource):
    """One Qdrant: a server when `url` is set, otherwise the embedded store at `path`.

    The embedded store is a folder that one process opens at a time (qdrant-client locks it), so
    `open()` waits up to `lock_wait_seconds` for another process (a sensor tick, another run) to
    let go of it, and closes the client when done.
    """

    url: str | None = Field(default=None, description="a Qdrant server (GSV_QDRANT_URL)")
    api_key: str | None = Field(default=None, description="its API key (GSV_QDRANT_API_KEY)")
    path: str | None = Field(default=None, description="embedded Qdrant's folder (GSV_QDRANT_PATH)")
    timeout_seconds: int = 60
    lock_wait_seconds: float = 120

    @property
    def is_server(self) -> bool:
        return bool(self.url)

    def client(self) -> "QdrantClient":
        # Imported here: qdrant-client takes about a second to import, and every process that
        # loads the code location (each run, each sensor tick's server) would pay it otherwise.
        from qdrant_client import QdrantClient

        if self.url:
            return QdrantClient(url=self.url, api_key=self.api_key, timeout=self.timeout_seconds)
        if not self.path:
            raise ValueError("QdrantResource needs a url (server) or a path (embedded)")
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                return QdrantClient(path=self.path)
            except RuntimeError as exc:
                if "already accessed" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @contextlib.contextmanager
    def open(self) -> Iterator["QdrantClient"]:
        client = self.client()
        try:
            yield client
        finally:
            client.close()
