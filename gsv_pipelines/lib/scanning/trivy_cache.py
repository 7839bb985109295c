"""Trivy's cache folder (TRIVY_CACHE_DIR), shared by every scan, the DB refresh and the Trivy
server: the vulnerability DB in generations, and the locks that keep them apart.

    <cache>/db-generations/<id>/db/trivy.db, metadata.json   a published DB, never written again
    <cache>/db-current.json      {"generation": <id>}: the DB scans use from now on (atomic)
    <cache>/db-staging/<id>/     a refresh in progress; renamed into db-generations/ when done

A refresh downloads into a staging folder that nobody reads, then publishes it by renaming it
and rewriting db-current.json: no scan ever sees a half-written DB. A cache that was never
published but holds `db/trivy.db` itself (a DB written in place, as `trivy --cache-dir` does) is
its own, only generation.

Locks (flock on files of the cache, so they hold across the pods that share its volume):
- scans through the Trivy server hold the scans lock shared while they run; the server takes it
  exclusively (after the gate, so that no new scan slips in) to switch to a new generation once
  the scans in flight are done, so each scan is made and recorded with one DB;
- whoever reads a generation's files (a scan on its own, the server copying its DB) holds the
  readers lock shared; an old generation is deleted only when nobody does.
"""

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENERATIONS = "db-generations"
STAGING = "db-staging"
CURRENT = "db-current.json"
# Who passes the gate may start a scan; the server closes it to drain the scans lock.
GATE_LOCK = ".gsv-trivy-gate.lock"
SCANS_LOCK = ".gsv-trivy-scans.lock"
READERS_LOCK = ".gsv-trivy-readers.lock"
# Refreshes one at a time, so that a second one finds the DB current instead of downloading.
REFRESH_LOCK = ".gsv-trivy-refresh.lock"


class TrivyCacheError(RuntimeError):
    """The cache holds no usable DB, or a file of it cannot be read."""


@dataclass(frozen=True)
class Generation:
    """One complete DB: `folder` is what Trivy takes as --cache-dir (the DB is in folder/db)."""

    id: str
    folder: Path

    @property
    def db_dir(self) -> Path:
        return self.folder / "db"

    def metadata(self) -> dict[str, Any]:
        path = self.db_dir / "metadata.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrivyCacheError(f"unreadable vulnerability DB metadata {path}: {exc}") from None


def holds_db(folder: Path) -> bool:
    return (folder / "db" / "trivy.db").is_file() and (folder / "db" / "metadata.json").is_file()


@dataclass(frozen=True)
class TrivyCache:
    root: Path

    # --- generations -----------------------------------------------------------------------

    def current(self) -> Generation | None:
        """The published DB, or None when the cache holds none."""
        pointer = self._read_json(CURRENT)
        if pointer is not None:
            generation = self.generation(str(pointer.get("generation")))
            if not holds_db(generation.folder):
                raise TrivyCacheError(
                    f"{self.root / CURRENT} names generation {generation.id}, which holds no "
                    "complete DB: materialize scanning/trivy_db to publish a new one"
                )
            return generation
        if holds_db(self.root):
            return Generation("in-place", self.root)
        return None

    def generation(self, generation_id: str) -> Generation:
        if generation_id == "in-place":
            return Generation("in-place", self.root)
        if not generation_id or "/" in generation_id or generation_id.startswith("."):
            raise TrivyCacheError(f"not a DB generation id: {generation_id!r}")
        return Generation(generation_id, self.root / GENERATIONS / generation_id)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A new, empty folder for a DB on its way in; removed unless published."""
        folder = self.root / STAGING / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path) -> Generation:
        """Make the complete DB in `staged` (a staging folder) the current one, atomically."""
        if not holds_db(staged):
            raise TrivyCacheError(f"{staged} holds no complete DB (db/trivy.db, db/metadata.json)")
        generation = self.generation(staged.name)
        generation.folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, generation.folder)
        updated_at = generation.metadata().get("UpdatedAt")
        self._write_json(CURRENT, {"generation": generation.id, "UpdatedAt": updated_at})
        return generation

    def prune(self) -> list[str]:
        """Delete every generation but the current one, unless someone reads one right now
        (then nothing, until the next prune). The ids deleted."""
        with self._lock(READERS_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
            if not free:
                return []
            current = self.current()
            deleted = []
            for folder in sorted((self.root / GENERATIONS).glob("*")):
                if current is None or folder.name != current.id:
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted.append(folder.name)
            return deleted

    def clear_staging(self) -> None:
        """Leftovers of refreshes that died half-way (call with the refresh lock held)."""
        shutil.rmtree(self.root / STAGING, ignore_errors=True)

    # --- locks -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Held while the files of a generation are read: none is deleted meanwhile."""
        with self._lock(READERS_LOCK, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def scanning(self) -> Iterator[None]:
        """Held by a scan through the Trivy server for its whole duration: the DB it started
        with stays the one served until it ends. Through the gate first, which is held only for
        a moment, unless the server has closed it to drain the scans in flight."""
        gate, scans = self._open(GATE_LOCK), self._open(SCANS_LOCK)
        try:
            fcntl.flock(gate, fcntl.LOCK_SH)
            try:
                fcntl.flock(scans, fcntl.LOCK_SH)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
            yield
        finally:
            gate.close()
            scans.close()

    @contextlib.contextmanager
    def drained(self) -> Iterator[None]:
        """No scan runs inside: new ones wait at the gate, those in flight are waited for."""
        with self._lock(GATE_LOCK, fcntl.LOCK_EX), self._lock(SCANS_LOCK, fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[None]:
        with self._lock(REFRESH_LOCK, fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Any other lock file of the cache, held exclusively."""
        with self._lock(name, fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def _lock(self, name: str, mode: int) -> Iterator[bool]:
        handle = self._open(name)
        try:
            try:
                fcntl.flock(handle, mode)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            handle.close()  # closing releases the lock

    def _open(self, name: str):
        self.root.mkdir(parents=True, exist_ok=True)
        return open(self.root / name, "a")

    # --- files -------------------------------------------------------------------------------

    def _read_json(self, name: str) -> dict | None:
        path = self.root / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrivyCacheError(f"unreadable {path}: {exc}") from None

    def _write_json(self, name: str, value: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
