"""The restore path for the platform database: real PostgreSQL 15 and SQLite files."""

import json
import sqlite3
import uuid
from datetime import UTC, datetime

import pytest

from gsv_pipelines.lib.backups.make import backup_platform_database
from gsv_pipelines.lib.backups.platform_db import table_stats
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.platform_db import PostgresHandler, SqliteHandler, handler_for
from gsv_pipelines.lib.drills.restore import (
    DRILL,
    DRY_RUN,
    RESTORE,
    RestoreRequest,
    remove_leftovers,
    restore,
)
from gsv_pipelines.lib.drills.scratch import PREFIX, marker

SCHEMA = """
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL, created_at timestamptz);
CREATE TABLE usage_events (tenant_id int REFERENCES tenants (id), tokens bigint, attrs jsonb);
INSERT INTO tenants SELECT g, 'tenant-' || g, timestamptz '2026-01-01' + g * interval '1 hour'
    FROM generate_series(1, 50) g;
INSERT INTO usage_events SELECT 1 + g % 50, g * 3, jsonb_build_object('n', g)
    FROM generate_series(1, 2000) g;
"""


@pytest.fixture
def database(postgres) -> str:
    name = f"platform_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    postgres.sql(name, SCHEMA)
    return name


def _databases(postgres, prefix: str = PREFIX) -> list[str]:
    rows = postgres.sql(
        "postgres", f"select datname from pg_database where datname like '{prefix}%'"
    )
    return sorted(r[0] for r in rows)


def _backup(url: str, store: ArtefactStore):
    return backup_platform_database(url, store, TargetPolicy()).manifest


def test_a_postgres_drill_passes_with_exact_counts_and_drops_its_database(
    postgres, database, tmp_path
):
    store = ArtefactStore(str(tmp_path / "store"))
    url = postgres.url(database)
    manifest = _backup(url, store)
    handler = handler_for(url, store)
    assert isinstance(handler, PostgresHandler)

    evidence = restore(
        handler, store, RestoreRequest("platform_db", database, DRILL), run_id="run-pg-1"
    )

    assert evidence.error is None and evidence.verified, evidence.error
    checks = {c.name: c for c in evidence.checks}
    assert checks["tables"].detail == "the backup's 2 table(s), no other"
    assert checks["row_counts"].detail == "2050 rows in 2 table(s): every count equals the backup's"
    assert checks["table_checksums"].passed
    assert evidence.backup["backup_id"] == manifest.backup_id and evidence.backup["rows"] == 2050
    assert evidence.destination.startswith(f"{PREFIX}{database}_")
    assert len(evidence.destination) <= 63
    assert evidence.location == f"PostgreSQL 127.0.0.1:{postgres.port}"
    assert _databases(postgres) == []


def test_a_changed_table_fails_its_checksum_and_a_missing_one_the_table_check(
    postgres, database, tmp_path
):
    store = ArtefactStore(str(tmp_path / "store"))
    manifest = _backup(postgres.url(database), store)
    # The manifest says what the source held; a copy that differs must fail.
    manifest.details["tables"]["usage_events"]["sha256"] = "0" * 64
    manifest.details["tables"]["plans"] = {"rows": 3, "sha256": "1" * 64}
    manifests.commit(store, manifest)

    evidence = restore(
        handler_for(postgres.url(database), store),
        store,
        RestoreRequest("platform_db", database, DRILL),
        run_id="run-pg-2",
    )
    checks = {c.name: (c.passed, c.detail) for c in evidence.checks}
    assert checks["tables"] == (False, "missing: plans")
    assert checks["table_checksums"] == (False, "usage_events: content differs")
    assert not evidence.verified and _databases(postgres) == []


def test_a_restore_over_a_populated_database_keeps_a_safety_backup(postgres, database, tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    url = postgres.url(database)
    backed_up = table_stats(url)
    manifest = _backup(url, store)
    postgres.sql(
        database,
        "DELETE FROM usage_events WHERE tokens > 3000; UPDATE tenants SET name = 'x'",
    )
    damaged = table_stats(url)
    handler = handler_for(url, store)

    dry = restore(
        handler,
        store,
        RestoreRequest("platform_db", database, DRY_RUN, destination=database),
        run_id="run-dry",
    )
    assert dry.verified and dry.facts["destination_before"] == {"tables": 2, "rows": 1050}
    assert table_stats(url) == damaged and _databases(postgres) == []

    real = restore(
        handler,
        store,
        RestoreRequest("platform_db", database, RESTORE, destination=database),
        run_id="run-real",
    )
    assert real.verified and real.error is None, real.error
    assert real.backup["backup_id"] == manifest.backup_id
    assert table_stats(url) == backed_up
    [safety] = [
        m
        for m in manifests.list_backups(store, "platform_db", database)
        if m.backup_id == real.safety_backup["backup_id"]
    ]
    assert safety.details["rows"] == 1050
    assert {t: s["sha256"] for t, s in safety.details["tables"].items()} == {
        t: s["sha256"] for t, s in damaged.items()
    }


def test_leftover_databases_are_removed_only_when_marked(postgres, tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    now = datetime.now(UTC)
    mark = marker("killed-run", "drill", "platform_db", "platform", now)
    handler = PostgresHandler(postgres.url("postgres"), store)
    postgres.create_database(f"{PREFIX}killed")
    comment = json.dumps(mark)
    postgres.sql("postgres", f"COMMENT ON DATABASE {PREFIX}killed IS '{comment}'", autocommit=True)
    postgres.create_database(f"{PREFIX}unmarked")

    removed = remove_leftovers(handler, set(), now)

    assert len(removed) == 1 and f"{PREFIX}killed" in removed[0]
    assert _databases(postgres) == [f"{PREFIX}unmarked"]
    postgres.sql("postgres", f"DROP DATABASE {PREFIX}unmarked", autocommit=True)


def _sqlite(path) -> str:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO tenants VALUES (1, 'acme'), (2, 'globex'), (3, 'initech');"
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def test_a_sqlite_drill_passes_and_silent_corruption_of_the_file_fails_it(tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    url = _sqlite(tmp_path / "platform.db")
    manifest = _backup(url, store)
    handler = handler_for(url, store, scratch_dir=tmp_path / "scratch")
    assert isinstance(handler, SqliteHandler)

    good = restore(handler, store, RestoreRequest("platform_db", "platform", DRILL), run_id="r1")
    assert good.verified and good.error is None, good.error
    assert good.facts["file"].startswith(str(tmp_path / "scratch" / PREFIX))
    assert list((tmp_path / "scratch").iterdir()) == []

    # Change a row inside the backup file, then recompute its checksum in the manifest.
    [entry] = manifest.files
    key = f"{manifest.folder}/{entry['name']}"
    copy = tmp_path / "altered.db"
    copy.write_bytes(b"".join(store.iter_chunks(key)))
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE tenants SET name = 'umbrella' WHERE id = 2")
    conn.commit()
    conn.close()
    stored = store.write_file(key, str(copy))
    entry.update(size=stored.size, sha256=stored.sha256)
    manifests.commit(store, manifest)

    bad = restore(handler, store, RestoreRequest("platform_db", "platform", DRILL), run_id="r2")
    checks = {c.name: (c.passed, c.detail) for c in bad.checks}
    assert checks["backup_checksums"][0] is True
    assert checks["row_counts"][0] is True
    assert checks["table_checksums"] == (False, "tenants: content differs")
    assert not bad.verified and list((tmp_path / "scratch").iterdir()) == []


def test_a_sqlite_drill_refuses_to_restore_into_the_source(tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    source = tmp_path / "platform.db"
    url = _sqlite(source)
    _backup(url, store)
    before = source.read_bytes()
    evidence = restore(
        handler_for(url, store),
        store,
        RestoreRequest("platform_db", "platform", DRILL, scratch_name="{target}"),
        run_id="r",
    )
    assert evidence.error.startswith("refusing to restore platform_db/platform into platform")
    assert source.read_bytes() == before


def test_tables_with_unhashable_types_are_digested_from_their_text(postgres, tmp_path):
    name = f"platform_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    postgres.sql(
        name,
        "CREATE TABLE events (id int PRIMARY KEY, body json, at point, seen timestamptz);"
        "INSERT INTO events SELECT g, json_build_object('g', g), point(g, -g), "
        "timestamptz '2026-01-01 00:00+00' + g * interval '1 minute' "
        "FROM generate_series(1, 40) g;",
    )
    store = ArtefactStore(str(tmp_path / "store"))
    url = postgres.url(name)
    manifest = _backup(url, store)
    assert manifest.details["tables"]["events"]["algorithm"] == "pg-rowtext-hash128"
    evidence = restore(
        handler_for(url, store), store, RestoreRequest("platform_db", name, DRILL), run_id="r-json"
    )
    assert evidence.verified and evidence.error is None, evidence.error

    before = table_stats(url)["events"]
    postgres.sql(name, "UPDATE events SET body = '{\"g\": 7 }' WHERE id = 7")
    assert table_stats(url)["events"]["sha256"] != before["sha256"]
    postgres.sql("postgres", f"DROP DATABASE {name}", autocommit=True)
