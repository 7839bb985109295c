"""Restoring a platform database backup, and proving the copy equals what was backed up.

PostgreSQL: a new database on the platform database's server (the connecting role needs
CREATEDB), filled by `pg_restore` in one transaction. SQLite: a new file. Verification: the same
tables, and per table the row count and content digest the backup recorded (`table_stats`, read
from the very snapshot that was dumped) equal the copy's.

The server is reached with the platform database's URL; its password never leaves this module's
objects (messages are scrubbed of it).
"""

import json
import urllib.parse
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups import platform_db
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.core.manifest import Manifest
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills import scratch as restore_scratch
from gsv_pipelines.lib.drills.restore import Check, RestoreError

SHOWN = 5
MARKER_SUFFIX = ".gsv_drill.json"


def _differences(recorded: dict[str, dict], restored: dict[str, dict]) -> list[Check]:
    missing = sorted(set(recorded) - set(restored))
    extra = sorted(set(restored) - set(recorded))
    tables = Check(
        "tables",
        not missing and not extra,
        "; ".join(
            part
            for part in (
                f"missing: {', '.join(missing)}" if missing else "",
                f"not in the backup: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        or f"the backup's {len(recorded)} table(s), no other",
    )
    common = sorted(set(recorded) & set(restored))
    counts = [
        f"{t}: {restored[t]['rows']} rows, the backup recorded {recorded[t]['rows']}"
        for t in common
        if restored[t]["rows"] != recorded[t]["rows"]
    ]
    rows = sum(recorded[t]["rows"] for t in recorded)
    comparable = [t for t in common if recorded[t].get("algorithm") == restored[t]["algorithm"]]
    digests = [
        f"{t}: content differs"
        for t in comparable
        if restored[t]["sha256"] != recorded[t]["sha256"]
    ]
    if common and not comparable:
        # Recorded before the digest algorithm changed: only the counts can be compared.
        checksums = Check("table_checksums", None, "recorded with another digest algorithm")
    else:
        checksums = Check(
            "table_checksums",
            not digests and not missing,
            "; ".join(digests[:SHOWN])
            or f"{len(common)} table(s): every checksum equals the one recorded at backup time",
        )
    return [
        tables,
        Check(
            "row_counts",
            not counts and not missing,
            "; ".join(counts[:SHOWN])
            or f"{rows} rows in {len(common)} table(s): every count equals the backup's",
        ),
        checksums,
    ]


def _row_counts(url: str) -> dict[str, Any]:
    engine = sa.create_engine(platform_db.parse_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            preparer = conn.dialect.identifier_preparer
            names = [n for n in sa.inspect(conn).get_table_names() if not n.startswith("sqlite_")]
            counts = {
                n: conn.execute(sa.text(f"select count(*) from {preparer.quote(n)}")).scalar_one()
                for n in sorted(names)
            }
    finally:
        engine.dispose()
    return {"tables": len(counts), "rows": sum(counts.values())}


class _Base:
    kind = backups.PLATFORM_DB

    def __init__(self, url: str, store: ArtefactStore, safety_policy: TargetPolicy | None):
        self.url = url
        self.sa_url = platform_db.parse_url(url)
        self.store = store
        self.safety_policy = safety_policy or TargetPolicy()

    def scrub(self, text: str) -> str:
        secret = self.sa_url.password
        if not secret:
            return text
        for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
            text = text.replace(form, "***")
        return text

    def url_of(self, name: str) -> str:
        raise NotImplementedError

    def describe(self, name: str) -> dict[str, Any]:
        return _row_counts(self.url_of(name))

    def verify(self, manifest: Manifest, name: str) -> list[Check]:
        return _differences(
            manifest.details.get("tables") or {}, platform_db.table_stats(self.url_of(name))
        )

    def safety_backup(self, name: str, run_id: str) -> Manifest:
        outcome = backups.backup_platform_database(
            self.url_of(name),
            self.store,
            self.safety_policy,
            run_id=run_id,
            reason="safety backup before a restore overwrote it",
            prune=False,
        )
        return outcome.manifest

    def _key(self, manifest: Manifest) -> str:
        [entry] = manifest.files
        return f"{manifest.folder}/{entry['name']}"


class PostgresHandler(_Base):
    """Restores into databases of the PostgreSQL server the platform database lives on."""

    name_limit = 63  # PostgreSQL's identifier length

    def __init__(self, url: str, store: ArtefactStore, safety_policy: TargetPolicy | None = None):
        super().__init__(url, store, safety_policy)
        # CREATE and DROP DATABASE run from another database than the one they act on.
        source = self.sa_url.database or "postgres"
        self.admin_url: URL = self.sa_url.set(
            database="postgres" if source != "postgres" else "template1"
        )

    def location(self) -> str:
        return f"PostgreSQL {self.sa_url.host or 'localhost'}:{self.sa_url.port or 5432}"

    def url_of(self, name: str) -> str:
        return self.sa_url.set(database=name).render_as_string(hide_password=False)

    def is_source(self, name: str, target: str) -> bool:
        return name == (self.sa_url.database or "postgres")

    def _admin(self, statement: str, **params: Any) -> list:
        engine = sa.create_engine(self.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(sa.text(statement), params)
                return list(result) if result.returns_rows else []
        except sa.exc.DBAPIError as exc:
            raise RestoreError(
                self.scrub(f"PostgreSQL {self.location()}: {str(exc.orig).strip()}")
            ) from None
        finally:
            engine.dispose()

    def _quoted(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def exists(self, name: str) -> bool:
        return bool(self._admin("select 1 from pg_database where datname = :n", n=name))

    def restore(self, manifest: Manifest, name: str, marker: dict | None) -> dict[str, Any]:
        self._admin(f"create database {self._quoted(name)} template template0")
        if marker:
            comment = json.dumps(marker).replace("'", "''")
            self._admin(f"comment on database {self._quoted(name)} is '{comment}'")
        platform_db.restore_postgres(self.store, self._key(manifest), self.url_of(name))
        return {"database": name}

    def drop(self, name: str) -> None:
        # FORCE: a disaster restore replaces the database under whoever is connected to it.
        self._admin(f"drop database if exists {self._quoted(name)} with (force)")

    def leftovers(self) -> list[restore_scratch.Leftover]:
        rows = self._admin(
            "select datname, shobj_description(oid, 'pg_database') from pg_database "
            "where starts_with(datname, :prefix)",
            prefix=restore_scratch.PREFIX,
        )
        found = []
        for name, comment in rows:
            try:
                mark = json.loads(comment or "")
            except ValueError:
                continue
            if isinstance(mark, dict) and restore_scratch.MARKER_KEY in mark:
                found.append(restore_scratch.Leftover(name, mark))
        return found


class SqliteHandler(_Base):
    """Restores into SQLite files: scratch copies in `scratch_dir`, others beside the source."""

    name_limit = 120

    def __init__(
        self,
        url: str,
        store: ArtefactStore,
        scratch_dir: Path | None = None,
        safety_policy: TargetPolicy | None = None,
    ):
        super().__init__(url, store, safety_policy)
        self.source = platform_db.sqlite_path(url).resolve()
        self.scratch_dir = (scratch_dir or self.source.parent).resolve()

    def location(self) -> str:
        return f"SQLite files in {self.scratch_dir}"

    def path_of(self, name: str) -> Path:
        if name == self.source.stem:
            return self.source
        if name.startswith(restore_scratch.PREFIX):
            return self.scratch_dir / f"{name}.db"
        return self.source.parent / f"{name}{self.source.suffix}"

    def url_of(self, name: str) -> str:
        return f"sqlite:///{self.path_of(name)}"

    def is_source(self, name: str, target: str) -> bool:
        return self.path_of(name) == self.source

    def exists(self, name: str) -> bool:
        return self.path_of(name).exists()

    def _marker_path(self, name: str) -> Path:
        path = self.path_of(name)
        return path.with_name(path.name + MARKER_SUFFIX)

    def restore(self, manifest: Manifest, name: str, marker: dict | None) -> dict[str, Any]:
        path = self.path_of(name)
        if marker:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._marker_path(name).write_text(json.dumps(marker))
        platform_db.restore_sqlite(self.store, self._key(manifest), path)
        return {"file": str(path)}

    def drop(self, name: str) -> None:
        path = self.path_of(name)
        for leftover in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal"))):
            leftover.unlink(missing_ok=True)
        self._marker_path(name).unlink(missing_ok=True)

    def leftovers(self) -> list[restore_scratch.Leftover]:
        found = []
        for marker_path in sorted(
            self.scratch_dir.glob(f"{restore_scratch.PREFIX}*{MARKER_SUFFIX}")
        ):
            name = marker_path.name.removesuffix(MARKER_SUFFIX).removesuffix(".db")
            try:
                mark = json.loads(marker_path.read_text())
            except (OSError, ValueError):
                continue
            found.append(restore_scratch.Leftover(name, mark))
        return found


def handler_for(
    url: str,
    store: ArtefactStore,
    scratch_dir: Path | None = None,
    safety_policy: TargetPolicy | None = None,
) -> PostgresHandler | SqliteHandler:
    backend = platform_db.parse_url(url).get_backend_name()
    if backend == "postgresql":
        return PostgresHandler(url, store, safety_policy)
    if backend == "sqlite":
        return SqliteHandler(url, store, scratch_dir, safety_policy)
    raise RestoreError(f"no restore method for {backend} databases")
