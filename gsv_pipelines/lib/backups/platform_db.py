"""Back up and restore the platform database, and fingerprint its tables to prove a restore.

The database is PostgreSQL in production (pg_dump custom format) and a SQLite file locally
(sqlite3's online backup API). Either way the backup streams into the store as one file.

Connection passwords go to pg_dump/pg_restore through the environment only, and are scrubbed
from whatever they print, so they never reach argv, logs or exception messages.
"""

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.parse
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from gsv_pipelines.lib.core.store import CHUNK, ArtefactStore, StoredFile

PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
ROWS_PER_FETCH = 1000

# libpq reads these from the environment; a URL's query string may set them too.
LIBPQ_QUERY_VARIABLES = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}


class PlatformDbError(RuntimeError):
    """A platform database backup or restore failed."""


class PlatformDbBackupError(PlatformDbError):
    pass


class PlatformDbRestoreError(PlatformDbError):
    pass


def parse_url(url: str) -> URL:
    try:
        return sa.make_url(url)
    except ArgumentError:
        # SQLAlchemy's message repeats the whole string, password included.
        raise PlatformDbError("not a valid SQLAlchemy database URL") from None


def sqlite_path(url_or_path: str | os.PathLike) -> Path:
    """The file behind a `sqlite:///…` URL or a plain path; it must exist.

    Opening a missing file with sqlite3 would silently create an empty database, and a backup
    of that would look like a success.
    """
    text = os.fspath(url_or_path)
    if "://" in text:
        url = parse_url(text)
        database = url.database
        if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            raise PlatformDbError(f"not a SQLite database file: {url!r}")
        text = database
    path = Path(text)
    if not path.is_file():
        raise PlatformDbError(f"SQLite database {path} does not exist")
    return path


def table_stats(url: str) -> dict[str, dict]:
    """Row count and a content digest of every table in the default schema:
    `{table: {rows, sha256, algorithm}}`.

    The same data restored into the same kind of engine gives the same stats, and any changed
    cell, added or removed row changes them. PostgreSQL computes them server-side, in one
    (parallel) sequential scan per table, because a restore's verification must cost little next
    to the restore: the SHA-256 of the column names, the row count, and two sums of 64-bit hashes
    of each row (`hash_record_extended`, the hashes hash partitioning relies on; row order plays
    no part). Tables with a column type that has no such hash (json, xml, point…) hash each row's
    text form instead, with every setting that affects it pinned. SQLite: the SHA-256 of every
    row in a canonical text form, in key order.
    """
    sa_url = parse_url(url)
    if sa_url.get_backend_name() == "sqlite":
        sqlite_path(url)  # before connecting: connecting would create the file
    engine = sa.create_engine(sa_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return _connection_stats(conn)
    finally:
        engine.dispose()


# Settings that change how values print as text, pinned for the transaction that reads stats:
# the restored database's defaults (time zone above all) may differ from the source's.
PG_TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}
PG_ROW_HASH = (
    "select count(*), coalesce(sum(hash_record_extended(t, 0)::numeric), 0), "
    "coalesce(sum(hash_record_extended(t, 1)::numeric), 0) from {table} as t"
)
# OFFSET 0 keeps the text of a row from being computed once per hash.
PG_TEXT_HASH = (
    "select count(*), coalesce(sum(hashtextextended(x.r, 0)::numeric), 0), "
    "coalesce(sum(hashtextextended(x.r, 1)::numeric), 0) from {table} as t "
    "cross join lateral (select t::text as r offset 0) as x"
)
PG_ALGORITHMS = {PG_ROW_HASH: "pg-rowhash128", PG_TEXT_HASH: "pg-rowtext-hash128"}
SQLITE_ALGORITHM = "sqlite-rows-sha256"
UNDEFINED_FUNCTION = "42883"


def _connection_stats(conn: sa.Connection) -> dict[str, dict]:
    inspector = sa.inspect(conn)
    names = [n for n in inspector.get_table_names() if not n.startswith("sqlite_")]
    if conn.dialect.name == "postgresql":
        for setting, value in PG_TEXT_SETTINGS.items():
            conn.execute(sa.text("select set_config(:s, :v, true)"), {"s": setting, "v": value})
        stats = _pg_table_stats
    else:
        stats = _table_stats
    return {name: stats(conn, inspector, name) for name in sorted(names)}


def _columns(inspector: sa.Inspector, name: str) -> list[dict]:
    with warnings.catch_warnings():
        # Unknown types (xml, point…) are expected: they are hashed as the driver returns them.
        warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
        return inspector.get_columns(name)


def _pg_table_stats(conn: sa.Connection, inspector: sa.Inspector, name: str) -> dict:
    table = conn.dialect.identifier_preparer.quote(name)
    query = PG_ROW_HASH
    try:
        with conn.begin_nested():
            rows, first, second = conn.execute(sa.text(query.format(table=table))).one()
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) != UNDEFINED_FUNCTION:
            raise
        query = PG_TEXT_HASH
        rows, first, second = conn.execute(sa.text(query.format(table=table))).one()
    digest = hashlib.sha256(_line([c["name"] for c in _columns(inspector, name)]))
    digest.update(_line([rows, str(first), str(second)]))
    return {"rows": rows, "sha256": digest.hexdigest(), "algorithm": PG_ALGORITHMS[query]}


def _table_stats(conn: sa.Connection, inspector: sa.Inspector, name: str) -> dict:
    columns = _columns(inspector, name)
    table = sa.table(name, *[sa.column(c["name"]) for c in columns])
    order_names = inspector.get_pk_constraint(name).get("constrained_columns") or [
        c["name"] for c in columns
    ]
    query = sa.select(*table.c).order_by(*[table.c[n] for n in order_names])

    digest = hashlib.sha256()
    digest.update(_line([c["name"] for c in columns]))
    rows = 0
    result = conn.execution_options(stream_results=True, yield_per=ROWS_PER_FETCH).execute(query)
    for row in result:
        digest.update(_line([_canonical(value) for value in row]))
        rows += 1
    return {"rows": rows, "sha256": digest.hexdigest(), "algorithm": SQLITE_ALGORITHM}


def _line(values: list[Any]) -> bytes:
    return (json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _canonical(value: Any) -> Any:
    """A JSON value that tells apart every cell a driver can return (`1`, `"1"`, `1.0`, NULL…)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            # timestamptz comes back in the session's time zone, which differs between servers.
            value = value.astimezone(dt.UTC)
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date | dt.time):
        return {type(value).__name__: value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return {"object": {k: _canonical(v) for k, v in items}}
    if isinstance(value, list | tuple):
        return {"array": [_canonical(v) for v in value]}
    return {type(value).__name__: str(value)}


def find_pg_binary(name: str, override: str | None = None) -> str:
    if override:
        return override
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the versioned binaries off PATH unless postgresql-client-common is installed.
    return str(PG_BINDIR / name)


def libpq_environment(url: URL) -> dict[str, str]:
    """The process environment with the URL's connection parameters as PG* variables."""
    env = dict(os.environ)
    given = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    for option, variable in LIBPQ_QUERY_VARIABLES.items():
        value = url.query.get(option)
        given[variable] = value if isinstance(value, str) else None
    env.update({name: value for name, value in given.items() if value})
    return env


def _scrub(text: str, url: URL) -> str:
    secret = url.password
    if not secret:
        return text
    # Also as it would appear inside a URL or connection string.
    for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
        text = text.replace(form, "***")
    return text


def _read_tail(stderr: IO[bytes], limit: int = 4000) -> str:
    stderr.seek(0)
    return stderr.read().decode(errors="replace").strip()[-limit:]


def backup_postgres(
    url: str,
    store: ArtefactStore,
    key: str,
    pg_dump: str | None = None,
    snapshot: str | None = None,
) -> StoredFile:
    """`pg_dump -Fc` of the URL's database, streamed into the store at `key`.

    With `snapshot` (from `pg_export_snapshot()`), the dump sees exactly that transaction's data.
    """
    sa_url = parse_url(url)
    argv = [find_pg_binary("pg_dump", pg_dump), "-Fc", "--no-owner", "--no-privileges"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    # A file, not a pipe: pg_dump must never block on a full stderr while we read stdout.
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=libpq_environment(sa_url),
            )
        except OSError as exc:
            raise PlatformDbBackupError(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            stored = store.write_stream(key, iter(lambda: proc.stdout.read(CHUNK), b""))
        except BaseException:
            proc.kill()
            proc.wait()
            store.delete(key)
            raise
        finally:
            proc.stdout.close()
        code = proc.wait()
        if code != 0:
            store.delete(key)
            message = _scrub(_read_tail(stderr), sa_url)
            raise PlatformDbBackupError(
                f"pg_dump of database {sa_url.database!r} exited with code {code}: {message}"
            )
    return stored


def restore_postgres(
    store: ArtefactStore, key: str, target_url: str, pg_restore: str | None = None
) -> None:
    """Restore a pg_dump archive from the store into an existing, empty database.

    One transaction: a failed restore leaves the target as empty as it was.
    """
    sa_url = parse_url(target_url)
    if not sa_url.database:
        raise PlatformDbRestoreError("the target URL names no database")
    argv = [
        find_pg_binary("pg_restore", pg_restore),
        "--no-owner",
        "--exit-on-error",
        "--single-transaction",
        # Only the name: the rest of the connection comes from the environment.
        f"--dbname={sa_url.database}",
    ]
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=libpq_environment(sa_url),
            )
        except OSError as exc:
            raise PlatformDbRestoreError(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            _feed(proc.stdin, store.iter_chunks(key))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            message = _scrub(_read_tail(stderr), sa_url)
            raise PlatformDbRestoreError(
                f"pg_restore into database {sa_url.database!r} exited with code {code}: {message}"
            )


def _feed(stdin: IO[bytes], chunks: Iterable[bytes]) -> None:
    # A broken pipe means pg_restore stopped reading: it failed, and its exit code and stderr
    # say why. Closing can break too, when the buffered rest has nowhere to go.
    with contextlib.suppress(BrokenPipeError):
        try:
            for chunk in chunks:
                stdin.write(chunk)
        finally:
            stdin.close()


def backup_sqlite(
    url_or_path: str | os.PathLike, store: ArtefactStore, key: str
) -> tuple[StoredFile, dict[str, dict]]:
    """A consistent copy made with sqlite3's online backup API, then streamed into the store.

    Returns the stored file and the table stats of exactly that copy.
    """
    try:
        source_path = sqlite_path(url_or_path)
    except PlatformDbError as exc:
        raise PlatformDbBackupError(str(exc)) from None
    fd, copy_path = tempfile.mkstemp(prefix="gsv-sqlite-", suffix=".db")
    os.close(fd)
    try:
        # Read-only: this can never create or change the source.
        source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(copy_path)
            try:
                source.backup(copy)
            finally:
                copy.close()
        finally:
            source.close()
        stats = table_stats(f"sqlite:///{copy_path}")
        return store.write_file(key, copy_path), stats
    except sqlite3.Error as exc:
        raise PlatformDbBackupError(f"SQLite backup of {source_path} failed: {exc}") from exc
    finally:
        os.remove(copy_path)


def restore_sqlite(store: ArtefactStore, key: str, target_path: str | os.PathLike) -> None:
    """Write the backup at `key` to `target_path`, a new file, once it passes a quick check."""
    target = Path(target_path)
    if target.exists():
        raise PlatformDbRestoreError(f"{target} already exists: restore into a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with open(partial, "wb") as out:
            for chunk in store.iter_chunks(key):
                out.write(chunk)
        _check_sqlite(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _check_sqlite(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise PlatformDbRestoreError(f"the backup is not a usable SQLite database: {exc}") from exc
    if verdict != "ok":
        raise PlatformDbRestoreError(f"the backup fails SQLite's quick_check: {verdict}")


def backup(url: str, store: ArtefactStore, key: str) -> tuple[StoredFile, str, dict[str, dict]]:
    """Back up the database at `url` into `key`.

    Returns the file, the method used, and the table stats of exactly the data in the backup
    (what a restore must reproduce), taken from the same snapshot as the dump.
    """
    sa_url = parse_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        stored, stats = backup_sqlite(url, store, key)
        return stored, "sqlite_backup", stats
    if backend != "postgresql":
        raise PlatformDbBackupError(f"no backup method for {backend} databases")
    engine = sa.create_engine(sa_url, poolclass=NullPool)
    try:
        with (
            engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            # pg_dump joins this transaction's snapshot, and the stats are read inside it:
            # both describe the same instant, whatever is written meanwhile.
            snapshot = conn.execute(sa.text("select pg_export_snapshot()")).scalar_one()
            stored = backup_postgres(url, store, key, snapshot=snapshot)
            stats = _connection_stats(conn)
    except sa.exc.OperationalError as exc:
        raise PlatformDbBackupError(
            f"cannot connect to database {sa_url.database!r} on {sa_url.host}: "
            f"{_scrub(str(exc.orig), sa_url)}"
        ) from None
    finally:
        engine.dispose()
    return stored, "pg_dump", stats


def restore(store: ArtefactStore, key: str, target_url: str) -> None:
    """Restore the backup at `key` into the database `target_url` names (empty or new)."""
    sa_url = parse_url(target_url)
    backend = sa_url.get_backend_name()
    if backend == "postgresql":
        restore_postgres(store, key, target_url)
    elif backend == "sqlite":
        if not sa_url.database or sa_url.database == ":memory:":
            raise PlatformDbRestoreError("the target URL names no SQLite file")
        restore_sqlite(store, key, sa_url.database)
    else:
        raise PlatformDbRestoreError(f"no restore method for {backend} databases")
