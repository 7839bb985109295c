"""The artefact store: one folder tree over fsspec (a local path, `file://…` or `s3://bucket/prefix`).

Every domain that writes artefacts (backups, scan reports, drill reports) writes through it. Keys
are relative posix paths under the store's root. Writes stream: nothing is held whole in memory.
"""

import contextlib
import hashlib
import json
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from fsspec.core import url_to_fs

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """A file written to the store, with what is needed to verify it later."""

    key: str
    size: int
    sha256: str


class HashingWriter:
    """A write-only binary file that hashes what passes through it (for pyarrow writers)."""

    def __init__(self, raw: BinaryIO, key: str):
        self.raw, self.key = raw, key
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    @property
    def stored(self) -> StoredFile:
        return StoredFile(key=self.key, size=self.size, sha256=self.sha256.hexdigest())


class ArtefactStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.fs, root = url_to_fs(self.url, **(storage_options or {}))
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key) if key else self.root

    def location(self, key: str = "") -> str:
        """The full address of `key`, for people: metadata, reports, error messages."""
        return posixpath.join(self.url, key) if key else self.url

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> StoredFile:
        """Write `chunks` to `key`, hashing on the way; memory stays at one chunk."""
        with self.open_hashed(key) as out:
            for chunk in chunks:
                out.write(chunk)
        return out.stored

    @contextlib.contextmanager
    def open_hashed(self, key: str) -> Iterator[HashingWriter]:
        """A file to write `key` through, hashing as it goes; `.stored` describes the result."""
        self.fs.makedirs(posixpath.dirname(self._path(key)), exist_ok=True)
        with self.fs.open(self._path(key), "wb") as out:
            yield HashingWriter(out, key)

    def write_file(self, key: str, local_path: str) -> StoredFile:
        with open(local_path, "rb") as source:
            return self.write_stream(key, iter(lambda: source.read(CHUNK), b""))

    def write_json_atomic(self, key: str, obj: Any) -> None:
        """Make `key` appear whole or not at all: written aside, then moved into place."""
        data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
        tmp = f"{key}.partial"
        self.fs.makedirs(posixpath.dirname(self._path(key)), exist_ok=True)
        self.fs.pipe_file(self._path(tmp), data)
        self.fs.mv(self._path(tmp), self._path(key))

    def read_json(self, key: str) -> Any:
        return json.loads(self.fs.cat_file(self._path(key)))

    def open(self, key: str, mode: str = "rb") -> BinaryIO:
        return self.fs.open(self._path(key), mode)

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        with self.open(key) as source:
            yield from iter(lambda: source.read(CHUNK), b"")

    def hash(self, key: str) -> StoredFile:
        """Re-read `key` from the store and hash it."""
        digest, size = hashlib.sha256(), 0
        for chunk in self.iter_chunks(key):
            digest.update(chunk)
            size += len(chunk)
        return StoredFile(key=key, size=size, sha256=digest.hexdigest())

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def glob(self, pattern: str) -> list[str]:
        """Keys matching `pattern` (relative to the root), sorted."""
        prefix = self.root + "/"
        return sorted(path.removeprefix(prefix) for path in self.fs.glob(self._path(pattern)))

    def list_dirs(self, key: str) -> list[str]:
        """Names of the folders directly under `key`."""
        if not self.fs.exists(self._path(key)):
            return []
        entries = self.fs.ls(self._path(key), detail=True, refresh=True)
        return sorted(
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory"
        )

    def delete(self, key: str) -> None:
        """Delete `key`, a file or a whole folder."""
        if self.fs.exists(self._path(key)):
            self.fs.rm(self._path(key), recursive=True)
