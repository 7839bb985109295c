"""A DR drill's RTO per target against the raw restore alone, in the same run.

The issue's figures: a 200,000-point collection of 384-dim vectors (embedded Qdrant) and a
1,000,000-row PostgreSQL table. Each is backed up by the backups group's own code, then restored
twice into scratch copies: raw (the restore alone, no verification: restore_collection into a
new collection; CREATE DATABASE + pg_restore) and as a drill (restore.py in drill mode: checksums
re-verified, restore, then every check the drill makes). The figure is the drill's RTO (start of
restore to verified) over the raw restore's wall time. Goal: verification adds at most 50%.

Qdrant runs in a child process (embedded Qdrant holds the source and its copy in memory, ~3 GB
each at full size) on a copy of bench_qdrant_export's fixture, in /dev/shm when there is room.
PostgreSQL is a throwaway 15 cluster (tests/services/postgres.py); its raw restore and drill
alternate `PG_REPEATS` times and the medians are compared.

`python -m benchmarks.bench_drill --small` runs the same at 5,000 points and 50,000 rows.
"""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTS = 200_000
ROWS = 1_000_000
DIM = 384
PG_REPEATS = 3
GOAL = 1.5
TMPFS = Path("/dev/shm")

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")  # local mode warns about collections over 20,000 points
from qdrant_client import QdrantClient
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.backups.make import backup_qdrant_collection
from gsv_pipelines.lib.backups.qdrant_export import restore_collection
from gsv_pipelines.lib.drills.restore import DRILL, RestoreRequest, restore
from gsv_pipelines.lib.drills.qdrant import QdrantHandler
from gsv_pipelines.lib.core.store import ArtefactStore

path, store_url, collection, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = QdrantClient(path=path)
store = ArtefactStore(store_url)
started = time.perf_counter()
manifest = backup_qdrant_collection(
    client, collection, store, TargetPolicy(batch_size=batch), server_url=None, api_key=None
).manifest
backup_seconds = time.perf_counter() - started

started = time.perf_counter()
restored = restore_collection(client, store, manifest.folder, "raw_restore", batch_size=batch)
raw = time.perf_counter() - started
client.delete_collection("raw_restore")

evidence = restore(
    QdrantHandler(client, store, batch_size=batch),
    store,
    RestoreRequest("qdrant", collection, DRILL),
    run_id="bench-drill",
)
client.close()
print(json.dumps({
    "points": restored, "backup_seconds": backup_seconds, "raw_seconds": raw,
    "evidence": evidence.to_dict(),
}))
"""


def _qdrant_source(work: Path, points: int) -> tuple[Path, str]:
    """An embedded Qdrant folder holding `points` points: the export benchmark's fixture at full
    size (copied: the drill writes into the same folder), a freshly built one otherwise."""
    target = work / "qdrant"
    if points == POINTS:
        from benchmarks.bench_qdrant_export import COLLECTION, fixture

        root, _, _ = fixture()
        shutil.copytree(root / str(POINTS), target, ignore=shutil.ignore_patterns(".lock"))
        return target, COLLECTION
    import numpy as np
    from qdrant_client import QdrantClient, models

    from benchmarks.bench_qdrant_export import _batch

    client = QdrantClient(path=str(target))
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    rng = np.random.default_rng(1)
    for start in range(0, points, 1000):
        client.upsert("bench", points=_batch(rng, start, min(1000, points - start)))
    client.close()
    return target, "bench"


def _qdrant(points: int) -> dict:
    base = TMPFS if TMPFS.is_dir() and shutil.disk_usage(TMPFS).free > 8 << 30 else None
    with tempfile.TemporaryDirectory(prefix="gsv-bench-drill-", dir=base) as tmp:
        work = Path(tmp)
        print(f"  Qdrant: {points:,} points in {work}", flush=True)
        path, collection = _qdrant_source(work, points)
        from gsv_pipelines.lib.backups.policy import load_backup_policy

        batch = load_backup_policy().defaults.batch_size
        argv = [sys.executable, "-c", CHILD, str(path), str(work / "store"), collection]
        out = subprocess.run([*argv, str(batch)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the Qdrant drill failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    evidence = result["evidence"]
    if not evidence["verified"] or evidence["error"]:
        raise RuntimeError(f"the Qdrant drill did not verify: {evidence['error']}")
    return {
        "points": result["points"],
        "backup_seconds": round(result["backup_seconds"], 2),
        "raw_restore_seconds": round(result["raw_seconds"], 2),
        "rto_seconds": evidence["rto_seconds"],
        "phases": evidence["phases"],
        "checks": {c["name"]: c["detail"] for c in evidence["checks"]},
    }


TABLE = """
CREATE TABLE usage_events (
    id bigint PRIMARY KEY, tenant text NOT NULL, agent text, tokens int,
    cost numeric(12, 6), at timestamptz, attrs jsonb
);
INSERT INTO usage_events
SELECT g, 'tenant-' || (g % 50), 'agent-' || (g % 300), (g * 7) % 5000,
       ((g % 1000) / 997.0)::numeric(12, 6), timestamptz '2026-01-01' + g * interval '1 second',
       jsonb_build_object('model', 'm' || (g % 5), 'ok', g % 2 = 0)
FROM generate_series(1, {rows}) g;
"""


def _postgres(rows: int) -> dict:
    from gsv_pipelines.lib.backups import platform_db
    from gsv_pipelines.lib.backups.make import backup_platform_database
    from gsv_pipelines.lib.backups.policy import TargetPolicy
    from gsv_pipelines.lib.core.store import ArtefactStore
    from gsv_pipelines.lib.drills.platform_db import PostgresHandler
    from gsv_pipelines.lib.drills.restore import DRILL, RestoreRequest, restore
    from tests.services.postgres import start_postgres

    print(f"  PostgreSQL: {rows:,} rows", flush=True)
    server = start_postgres()
    try:
        server.create_database("platform")
        with server.connect("platform") as conn, conn.cursor() as cur:
            cur.execute(TABLE.format(rows=rows))
        with tempfile.TemporaryDirectory(prefix="gsv-bench-drill-pg-") as tmp:
            store = ArtefactStore(tmp)
            started = time.perf_counter()
            manifest = backup_platform_database(
                server.url("platform"), store, TargetPolicy()
            ).manifest
            backup_seconds = time.perf_counter() - started
            handler = PostgresHandler(server.url("platform"), store)
            [entry] = manifest.files
            raws, rtos, drills = [], [], []
            for attempt in range(PG_REPEATS):
                name = f"raw_restore_{attempt}"
                started = time.perf_counter()
                handler._admin(f"create database {name} template template0")
                platform_db.restore_postgres(
                    store, f"{manifest.folder}/{entry['name']}", server.url(name)
                )
                raws.append(time.perf_counter() - started)
                handler.drop(name)
                evidence = restore(
                    handler,
                    store,
                    RestoreRequest("platform_db", "platform", DRILL),
                    run_id=f"bench-drill-{attempt}",
                )
                if not evidence.verified or evidence.error:
                    raise RuntimeError(f"the database drill did not verify: {evidence.error}")
                rtos.append(evidence.rto_seconds)
                drills.append(evidence)
    finally:
        server.stop()
    median = drills[rtos.index(statistics.median_low(rtos))]
    return {
        "rows": manifest.details["rows"],
        "dump_bytes": entry["size"],
        "backup_seconds": round(backup_seconds, 2),
        "raw_restore_seconds": round(statistics.median(raws), 2),
        "raw_restore_runs": [round(r, 2) for r in raws],
        "rto_seconds": round(statistics.median(rtos), 2),
        "rto_runs": [round(r, 2) for r in rtos],
        "phases": median.phases,
        "checks": {c.name: c.detail for c in median.checks},
    }


def run(points: int = POINTS, rows: int = ROWS) -> dict:
    qdrant = _qdrant(points)
    postgres = _postgres(rows)
    measured = {
        "qdrant_rto_seconds": qdrant["rto_seconds"],
        "postgres_rto_seconds": postgres["rto_seconds"],
    }
    baseline = {
        "qdrant_rto_seconds": qdrant["raw_restore_seconds"],
        "postgres_rto_seconds": postgres["raw_restore_seconds"],
    }
    ratio = {k: round(measured[k] / max(baseline[k], 1e-3), 2) for k in measured}
    return {
        "name": "drill",
        "what": f"DR drill RTO (checksums, restore, verification) of {points:,} points x {DIM}-dim "
        f"(embedded Qdrant) and of a {rows:,}-row PostgreSQL table",
        "baseline_what": "the raw restore alone in the same run: restore_collection into a new "
        "collection; CREATE DATABASE + pg_restore (median of "
        f"{PG_REPEATS})",
        "measured": measured,
        "baseline": baseline,
        "ratio": ratio,
        "goal": f"RTO <= {GOAL}x the raw restore (verification adds <= 50%)",
        "goals_met": {k: v <= GOAL for k, v in ratio.items()},
        "runs": {"qdrant": qdrant, "postgres": postgres},
    }


if __name__ == "__main__":
    small = "--small" in sys.argv[1:]
    print(json.dumps(run(5_000, 50_000) if small else run(), indent=2))
