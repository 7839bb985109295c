import sqlite3
import uuid

import fsspec
import pytest

from gsv_pipelines.lib.backups.platform_db import (
    PlatformDbBackupError,
    PlatformDbError,
    PlatformDbRestoreError,
    backup,
    backup_postgres,
    backup_sqlite,
    restore,
    restore_sqlite,
    table_stats,
)
from gsv_pipelines.lib.core.store import ArtefactStore

PASSWORD = "S3cr3t-pw"

PG_SCHEMA = """
CREATE TABLE accounts (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text,
    balance numeric(12, 2),
    created_at timestamptz NOT NULL
);
CREATE TABLE api_keys (
    key text PRIMARY KEY,
    account_id int REFERENCES accounts (id),
    secret bytea,
    active boolean NOT NULL,
    expires date
);
-- No primary key, with duplicate rows: ordered by every column.
CREATE TABLE usage_events (
    account_id int,
    kind text,
    tokens bigint,
    cost double precision,
    attrs jsonb,
    at timestamp
);
INSERT INTO accounts (name, email, balance, created_at) VALUES
    ('Zoë', 'zoe@example.org', 12.50, '2026-01-02 03:04:05+00'),
    ('東京チーム', NULL, NULL, '2026-01-03 10:00:00+09'),
    ('plain', '', 0, '2026-01-04 00:00:00.123456+00');
INSERT INTO api_keys VALUES
    ('k-1', 1, '\\x00ff10', true, '2027-01-01'),
    ('K-2', 2, NULL, false, NULL),
    ('k-☃', NULL, '\\x', true, NULL);
INSERT INTO usage_events VALUES
    (1, 'chat', 1200, 0.0125, '{"model": "m1", "tags": ["a", "b"]}', '2026-02-01 12:00:00'),
    (1, 'chat', 1200, 0.0125, '{"model": "m1", "tags": ["a", "b"]}', '2026-02-01 12:00:00'),
    (2, 'embed', 40, 1e-9, NULL, '2026-02-02 08:30:00'),
    (NULL, NULL, NULL, NULL, NULL, NULL);
"""

SQLITE_SCHEMA = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, balance NUMERIC, created_at TEXT);
CREATE TABLE usage_events (account_id INTEGER, kind TEXT, cost REAL, payload BLOB);
INSERT INTO accounts VALUES (1, 'Zoë', 12.5, '2026-01-02T03:04:05Z'), (2, '東京', NULL, NULL);
INSERT INTO usage_events VALUES
    (1, 'chat', 0.0125, x'00ff'), (1, 'chat', 0.0125, x'00ff'), (NULL, NULL, NULL, NULL);
"""


def create_database(postgres, prefix: str) -> str:
    return postgres.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def platform_db(postgres) -> str:
    name = create_database(postgres, "platform")
    postgres.sql(name, PG_SCHEMA)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtefactStore:
    if request.param == "local":
        return ArtefactStore(str(tmp_path / "store"))
    options = request.getfixturevalue("s3").storage_options()
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3", **options).mkdir(bucket)
    return ArtefactStore(f"s3://{bucket}/prefix", options)


def test_a_pg_dump_restores_to_the_same_table_stats(postgres, platform_db, store):
    source = table_stats(postgres.url(platform_db))
    assert {name: stats["rows"] for name, stats in source.items()} == {
        "accounts": 3,
        "api_keys": 3,
        "usage_events": 4,
    }

    stored, method, stats = backup(postgres.url(platform_db), store, "platform_db/1/dump.pgc")
    assert method == "pg_dump"
    assert stats == source
    assert stored.size > 0
    assert store.hash(stored.key) == stored

    scratch = create_database(postgres, "drill")
    # timestamptz comes back in the session's time zone: the stats must not depend on it.
    postgres.sql("postgres", f"ALTER DATABASE {scratch} SET timezone TO 'Asia/Tokyo'")
    restore(store, stored.key, postgres.url(scratch))
    assert table_stats(postgres.url(scratch)) == source

    postgres.sql(scratch, "UPDATE accounts SET email = 'zoe@example.com' WHERE id = 1")
    changed = table_stats(postgres.url(scratch))
    assert changed["accounts"]["sha256"] != source["accounts"]["sha256"]
    assert changed["accounts"]["rows"] == source["accounts"]["rows"]
    assert changed["usage_events"] == source["usage_events"]


def test_table_stats_see_added_and_removed_rows_and_null_versus_empty(postgres, platform_db):
    url = postgres.url(platform_db)
    before = table_stats(url)

    # A third copy of a row already there twice, in the table without a primary key.
    postgres.sql(platform_db, "INSERT INTO usage_events SELECT * FROM usage_events LIMIT 1")
    added = table_stats(url)["usage_events"]
    assert added["rows"] == 5
    assert added["sha256"] != before["usage_events"]["sha256"]

    newest = "SELECT max(ctid) FROM usage_events"
    postgres.sql(platform_db, f"DELETE FROM usage_events WHERE ctid = ({newest})")
    assert table_stats(url) == before

    postgres.sql(platform_db, "DELETE FROM usage_events WHERE account_id IS NULL")
    removed = table_stats(url)["usage_events"]
    assert removed["rows"] == 3
    assert removed["sha256"] != before["usage_events"]["sha256"]

    postgres.sql(platform_db, "UPDATE accounts SET email = NULL WHERE email = ''")
    assert table_stats(url)["accounts"]["sha256"] != before["accounts"]["sha256"]


def test_restoring_into_a_database_that_is_not_empty_fails_and_changes_nothing(
    postgres, platform_db, tmp_path
):
    store = ArtefactStore(str(tmp_path / "store"))
    stored = backup_postgres(postgres.url(platform_db), store, "dump.pgc")
    before = table_stats(postgres.url(platform_db))

    with pytest.raises(PlatformDbRestoreError, match="already exists"):
        restore(store, stored.key, postgres.url(platform_db))
    assert table_stats(postgres.url(platform_db)) == before


def test_a_failed_pg_dump_reports_stderr_without_the_password_and_leaves_no_file(
    postgres, tmp_path
):
    store = ArtefactStore(str(tmp_path / "store"))
    url = f"postgresql+psycopg2://gsv:{PASSWORD}@127.0.0.1:{postgres.port}/nope"

    with pytest.raises(PlatformDbBackupError) as failure:
        backup(url, store, "platform_db/1/dump.pgc")

    assert 'database "nope" does not exist' in str(failure.value)
    assert PASSWORD not in str(failure.value)
    assert PASSWORD not in repr(failure.value.__cause__) + repr(failure.value.__context__)
    assert not store.exists("platform_db/1/dump.pgc")


def test_the_password_travels_in_the_environment_and_is_scrubbed_from_stderr(tmp_path):
    # A stand-in pg_dump that prints what it was given (argv, the password) and fails.
    stand_in = tmp_path / "pg_dump"
    stand_in.write_text(
        '#!/bin/sh\necho "argv: $* password: $PGPASSWORD db: $PGDATABASE" >&2\nexit 3\n'
    )
    stand_in.chmod(0o755)
    store = ArtefactStore(str(tmp_path / "store"))
    url = f"postgresql://gsv:{PASSWORD}@db.internal:5433/platform"

    with pytest.raises(PlatformDbBackupError) as failure:
        backup_postgres(url, store, "dump.pgc", pg_dump=str(stand_in))

    message = str(failure.value)
    assert "argv: -Fc --no-owner --no-privileges password: *** db: platform" in message
    assert "exited with code 3" in message
    assert PASSWORD not in message
    assert not store.exists("dump.pgc")


def test_a_missing_pg_dump_binary_is_a_backup_error(tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    url = f"postgresql://gsv:{PASSWORD}@127.0.0.1/platform"

    with pytest.raises(PlatformDbBackupError, match="cannot run") as failure:
        backup_postgres(url, store, "dump.pgc", pg_dump=str(tmp_path / "no-such-pg_dump"))
    assert PASSWORD not in str(failure.value)
    assert not store.exists("dump.pgc")


def make_sqlite(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SQLITE_SCHEMA)
    conn.commit()
    conn.close()


def test_a_sqlite_backup_restores_to_the_same_table_stats(tmp_path):
    source = tmp_path / "platform.db"
    make_sqlite(source)
    store = ArtefactStore(str(tmp_path / "store"))
    before = table_stats(f"sqlite:///{source}")
    assert before["usage_events"]["rows"] == 3

    stored, method, stats = backup(f"sqlite:///{source}", store, "platform_db/1/platform.db")
    assert method == "sqlite_backup"
    assert stats == before
    assert store.hash(stored.key) == stored

    target = tmp_path / "drill" / "restored.db"
    restore_sqlite(store, stored.key, target)
    assert table_stats(f"sqlite:///{target}") == before

    conn = sqlite3.connect(target)
    conn.execute("UPDATE accounts SET balance = 12.51 WHERE id = 1")
    conn.commit()
    conn.close()
    assert table_stats(f"sqlite:///{target}")["accounts"] != before["accounts"]

    with pytest.raises(PlatformDbRestoreError, match="already exists"):
        restore_sqlite(store, stored.key, target)


def test_a_missing_sqlite_file_is_a_clear_error_and_is_not_created(tmp_path):
    missing = tmp_path / "absent.db"
    store = ArtefactStore(str(tmp_path / "store"))

    with pytest.raises(PlatformDbBackupError, match=r"absent\.db does not exist"):
        backup_sqlite(missing, store, "platform.db")
    with pytest.raises(PlatformDbBackupError, match="does not exist"):
        backup(f"sqlite:///{missing}", store, "platform.db")
    with pytest.raises(PlatformDbError, match="does not exist"):
        table_stats(f"sqlite:///{missing}")

    assert not missing.exists()
    assert not store.exists("platform.db")


def test_a_file_that_is_not_sqlite_is_not_restored(tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    store.write_stream("platform.db", [b"not a database" * 100])

    with pytest.raises(PlatformDbRestoreError, match="not a usable SQLite database"):
        restore_sqlite(store, "platform.db", tmp_path / "restored.db")
    assert list(tmp_path.glob("restored.db*")) == []
