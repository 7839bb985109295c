"""Backups as folders in the store, each made valid by its manifest, written last.

    <kind>/<target>/<backup_id>/<files…>
    <kind>/<target>/<backup_id>/manifest.json     (committed only once every file is written)

A folder without `manifest.json` is an interrupted backup: never listed as a backup, removed
by `remove_incomplete`. Verification re-reads every file from the store and compares sizes and
SHA-256 digests with the manifest.
"""

import posixpath
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    kind: str  # "qdrant", "platform_db", "vault"
    target: str  # collection name, database name, …
    backup_id: str
    method: str  # "export", "snapshot", "pg_dump", "sqlite_backup", "raft_snapshot"
    started_at: str
    finished_at: str
    # The moment the backup's data is consistent with: what RPO is measured from.
    consistency_point: str
    files: list[dict[str, Any]] = field(default_factory=list)  # {"name", "size", "sha256"}
    details: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def folder(self) -> str:
        return backup_folder(self.kind, self.target, self.backup_id)

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.files)

    @property
    def consistency_time(self) -> datetime:
        return datetime.fromisoformat(self.consistency_point)


def backup_folder(kind: str, target: str, backup_id: str) -> str:
    return posixpath.join(kind, target, backup_id)


def new_backup_id(now: datetime | None = None, run_id: str = "") -> str:
    """Sortable by time, unique per run: `20261127T031500Z-1a2b3c4d`."""
    now = now or datetime.now(UTC)
    suffix = f"-{run_id[:8]}" if run_id else ""
    return now.strftime("%Y%m%dT%H%M%SZ") + suffix


def file_entry(folder: str, stored: StoredFile) -> dict[str, Any]:
    return {
        "name": posixpath.relpath(stored.key, folder),
        "size": stored.size,
        "sha256": stored.sha256,
    }


def commit(store: ArtefactStore, manifest: Manifest) -> str:
    """Write the manifest last: from now on the backup exists. Returns its key."""
    key = posixpath.join(manifest.folder, MANIFEST)
    store.write_json_atomic(key, asdict(manifest))
    return key


def load(store: ArtefactStore, folder: str) -> Manifest:
    return Manifest(**store.read_json(posixpath.join(folder, MANIFEST)))


def list_backups(store: ArtefactStore, kind: str, target: str) -> list[Manifest]:
    """Committed backups of one target, oldest first."""
    base = posixpath.join(kind, target)
    found = []
    for backup_id in store.list_dirs(base):
        folder = posixpath.join(base, backup_id)
        if store.exists(posixpath.join(folder, MANIFEST)):
            found.append(load(store, folder))
    return sorted(found, key=lambda m: (m.consistency_point, m.backup_id))


@dataclass
class Verification:
    ok: bool
    files_checked: int
    bytes_checked: int
    problems: list[str]


def verify(store: ArtefactStore, manifest: Manifest) -> Verification:
    """Re-read every file of the backup from the store; compare size and SHA-256."""
    problems, checked, total = [], 0, 0
    if not manifest.files:
        problems.append("the manifest lists no files")
    for entry in manifest.files:
        key = posixpath.join(manifest.folder, entry["name"])
        if not store.exists(key):
            problems.append(f"{entry['name']}: missing from the store")
            continue
        actual = store.hash(key)
        checked += 1
        total += actual.size
        if actual.size != entry["size"]:
            problems.append(f"{entry['name']}: {actual.size} bytes, manifest says {entry['size']}")
        elif actual.sha256 != entry["sha256"]:
            problems.append(f"{entry['name']}: SHA-256 differs from the manifest")
    return Verification(
        ok=not problems, files_checked=checked, bytes_checked=total, problems=problems
    )


def backup_id_time(backup_id: str) -> datetime | None:
    try:
        return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def remove_incomplete(
    store: ArtefactStore, kind: str, target: str, started_before: datetime
) -> list[str]:
    """Delete folders of `target` that never got a manifest (interrupted backups).

    Only those started before `started_before`: a younger one may still be in progress.
    """
    base = posixpath.join(kind, target)
    removed = []
    for backup_id in store.list_dirs(base):
        folder = posixpath.join(base, backup_id)
        started = backup_id_time(backup_id)
        if started is None or started >= started_before:
            continue
        if not store.exists(posixpath.join(folder, MANIFEST)):
            store.delete(folder)
            removed.append(folder)
    return removed
