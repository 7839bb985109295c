"""Exporting an embedded-mode Qdrant collection to Parquet against a naive export, same run.

The issue's figure: 200,000 points x 384-dim float32 vectors with small payloads. Measured is
`export_collection` (lib/backups/qdrant_export.py) at 50k and at 200k points; the baseline is
the naive export (one `scroll` covering every point, with vectors and payloads, into a list, then
one `json.dump` of [{id, vector, payload}]). Goals: >= 5x the baseline's points/s, and the
export's own memory flat from 50k to 200k points.

"Own memory" is the peak RSS during the export minus the RSS once the collection is open: embedded
Qdrant holds the whole collection in RAM itself, which is not the export's doing. Each measurement
runs in a fresh process, which first runs the same export on a tiny in-memory collection (so lazy
imports such as the pandas that pyarrow pulls in count in neither figure), opens the collection,
returns freed heap to the OS (malloc_trim), reads VmRSS, resets the kernel's peak-RSS mark (VmHWM,
via /proc/self/clear_refs: opening a collection peaks far above what it keeps) and then times the
export alone. Linux only.

The figure is what the export adds to an embedded-mode process, with Python's default allocator as
in production. Opening a collection also frees about as much as it keeps (every vector passes
through a Python list of floats), and Python keeps those freed small blocks for reuse, so small
objects the export makes (the naive export's floats above all) partly cost no new memory: the
figures are lower bounds of what each export allocates. PYTHONMALLOC=malloc avoids the reuse but
measures glibc's fragmentation instead and slows both exports by 30-40%.

The fixture collections are built once and reused: `<data_dir>/bench/qdrant-export-fixture/`
(data_dir: GSV_DATA_DIR, default `.gsv` in the working directory), one embedded Qdrant storage
folder per size (`50000/`, `200000/`) and `fixture.json`, which records how they were made (sizes,
dimension, seed, qdrant-client version) and the build time. They are rebuilt when that file is
missing or differs. Delete the folder to force a rebuild. Building commits every point to SQLite
on its own, so it runs on tmpfs (/dev/shm) when there is room, then copies the folders into place.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups.policy import load_backup_policy
from gsv_pipelines.lib.core.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SIZES = (50_000, 200_000)
DIM = 384
SEED = 384_200_000
COLLECTION = "bench"
FIXTURE_FORMAT = 1  # bump when the generated points change
BUILD_BATCH = 2_000
TMPFS = Path("/dev/shm")
STORED_BYTES_PER_POINT = 5 << 10  # SQLite row of one pickled point (measured 4 KiB)
# Memory budget of the naive baseline's process per point: opening the collection peaks at
# ~23 KiB/point, and the naive export's list of Python floats needs ~13 KiB/point on top of the
# ~17 KiB/point the open keeps (less where it reuses what the open freed). It runs at the largest
# size that fits in half the available memory; throughput is per point, so a smaller run still
# compares.
NAIVE_BYTES_PER_POINT = 32 << 10
THROUGHPUT_GOAL = 5.0
FLATNESS_GOAL = 1.2  # "flat": own memory at 200k at most this many times that at 50k

TENANTS = [f"tenant-{i:02d}" for i in range(12)]
AGENTS = [f"agent-{i:03d}" for i in range(240)]
VOCABULARY = (
    "the a of to and in for on with by backup restore vector search agent tenant query answer "
    "document summary policy quarterly report customer invoice contract meeting notes release "
    "incident review deployment cluster region latency budget forecast roadmap onboarding"
)
WORDS = VOCABULARY.split()
EPOCH = datetime(2025, 1, 1, tzinfo=UTC).timestamp()

CHILD = r"""
import ctypes, gc, json, os, sys, tempfile, time, warnings

warnings.simplefilter("ignore")  # local mode warns about collections over 20,000 points
mode, path, collection, dim, out_dir, batch_size = sys.argv[1:7]
from qdrant_client import QdrantClient, models
if mode == "export":
    from gsv_pipelines.lib.backups.qdrant_export import export_collection
    from gsv_pipelines.lib.core.store import ArtefactStore


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    raise RuntimeError(f"no {field} in /proc/self/status")


def work(client, out_dir):
    if mode == "export":
        files, details = export_collection(
            client, collection, ArtefactStore(out_dir), "export", batch_size=int(batch_size)
        )
        return details["points"], sum(f.size for f in files)
    total = client.count(collection).count
    records, _ = client.scroll(collection, limit=total, with_payload=True, with_vectors=True)
    target = os.path.join(out_dir, "points.json")
    with open(target, "w") as f:
        json.dump([{"id": r.id, "vector": r.vector, "payload": r.payload} for r in records], f)
    return len(records), os.path.getsize(target)


# Warm up on a tiny in-memory collection: lazy imports (pyarrow imports pandas) and one-off set-up
# are then neither in the timing nor in the export's own memory.
with tempfile.TemporaryDirectory() as tiny_dir:
    tiny = QdrantClient(":memory:")
    params = models.VectorParams(size=int(dim), distance=models.Distance.COSINE)
    tiny.create_collection(collection, vectors_config=params)
    tiny.upsert(collection, models.Batch(
        ids=list(range(8)), vectors=[[1.0] * int(dim)] * 8, payloads=[{"text": "x"}] * 8
    ))
    work(tiny, tiny_dir)
    tiny.close()

start = time.perf_counter()
client = QdrantClient(path=path)
open_seconds = time.perf_counter() - start
open_peak = status("VmHWM")
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand what the open freed back to the OS
rss_open = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
if status("VmHWM") > rss_open + (64 << 20):
    raise RuntimeError("could not reset the peak RSS (VmHWM)")

start = time.perf_counter()
points, size = work(client, out_dir)
seconds = time.perf_counter() - start
peak = status("VmHWM")
client.close()
print(json.dumps({
    "points": points, "seconds": seconds, "open_seconds": open_seconds, "bytes": size,
    "open_peak_rss": open_peak, "rss_open": rss_open, "peak_rss": peak,
}))
"""


def _fixture_spec() -> dict:
    return {
        "format": FIXTURE_FORMAT,
        "sizes": list(SIZES),
        "dim": DIM,
        "seed": SEED,
        "collection": COLLECTION,
        "qdrant_client": version("qdrant-client"),
    }


def _batch(rng: np.random.Generator, start: int, count: int) -> models.Batch:
    """Points start..start+count-1: random vectors and small payloads, as a chat agent stores."""
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    tenants = rng.integers(len(TENANTS), size=count)
    agents = rng.integers(len(AGENTS), size=count)
    words = rng.integers(len(WORDS), size=(count, 40))
    stamps = EPOCH + rng.integers(365 * 86400, size=count)
    payloads = [
        {
            "tenant": TENANTS[tenants[i]],
            "agent": AGENTS[agents[i]],
            "text": " ".join(WORDS[w] for w in words[i])[:100],
            "created_at": datetime.fromtimestamp(stamps[i], UTC).isoformat(),
        }
        for i in range(count)
    ]
    return models.Batch(
        ids=list(range(start, start + count)), vectors=vectors.tolist(), payloads=payloads
    )


def _build_fixture(root: Path, spec: dict) -> dict:
    """Build one storage folder per size under `root`; return the build's figures."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    total = max(SIZES)
    on_tmpfs = TMPFS.is_dir() and shutil.disk_usage(TMPFS).free > 2 * total * (
        STORED_BYTES_PER_POINT
    )
    work = Path(tempfile.mkdtemp(prefix="gsv-qdrant-fixture-", dir=TMPFS if on_tmpfs else root))
    print(f"  building the fixture in {work}, then copying it to {root}", flush=True)
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    upsert_seconds = 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns about collections over 20,000
            client = QdrantClient(path=str(work))
            try:
                client.create_collection(
                    COLLECTION,
                    vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                )
                done = 0
                for size in sorted(SIZES):
                    while done < size:
                        batch = _batch(rng, done, min(BUILD_BATCH, size - done))
                        upserted = time.perf_counter()
                        client.upsert(COLLECTION, points=batch)
                        upsert_seconds += time.perf_counter() - upserted
                        done += len(batch.ids)
                        if done % (10 * BUILD_BATCH) == 0 or done == size:
                            rate = done / (time.perf_counter() - start)
                            print(f"  {done:>9,}/{total:,} points, {rate:,.0f}/s", flush=True)
                    # Every point is committed and nothing is being written: the folder is
                    # consistent, and later upserts only add to the copy's source.
                    shutil.copytree(work, root / str(size), ignore=shutil.ignore_patterns(".lock"))
            finally:
                client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    build = {
        "seconds": round(seconds, 1),
        "points": total,
        "points_per_s": round(total / seconds),
        "upsert_points_per_s": round(total / upsert_seconds),
        "method": f"upsert(models.Batch) of {BUILD_BATCH:,} points"
        + (" on tmpfs, folders copied into place" if on_tmpfs else " in place"),
    }
    (root / "fixture.json").write_text(json.dumps({**spec, "build": build}, indent=2) + "\n")
    print(f"  fixture built in {seconds:.0f} s ({total / seconds:,.0f} points/s)", flush=True)
    return build


def fixture() -> tuple[Path, dict, bool]:
    """The fixture's folder, how it was built, and whether this call built it."""
    root = load_settings().data_dir / "bench" / "qdrant-export-fixture"
    spec = _fixture_spec()
    marker = root / "fixture.json"
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError):
        stored = {}
    complete = all((root / str(size) / "meta.json").is_file() for size in SIZES)
    if complete and {k: stored.get(k) for k in spec} == spec:
        return root, stored["build"], False
    return root, _build_fixture(root, spec), True


def _sample(mode: str, path: Path, batch_size: int) -> dict:
    """One export (or naive export) of the collection at `path`, by a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-export-") as out_dir:
        argv = [sys.executable, "-c", CHILD, mode, str(path), COLLECTION, str(DIM), out_dir]
        argv.append(str(batch_size))
        out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} of {path} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "points": result["points"],
        "seconds": round(result["seconds"], 2),
        "points_per_s": round(result["points"] / result["seconds"]),
        "own_memory_mib": round((result["peak_rss"] - result["rss_open"]) / 2**20, 1),
        "rss_open_mib": round(result["rss_open"] / 2**20, 1),
        "open_seconds": round(result["open_seconds"], 1),
        "open_peak_rss_mib": round(result["open_peak_rss"] / 2**20, 1),
        "output_mib": round(result["bytes"] / 2**20, 1),
    }


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _check(result: dict, expected: int) -> dict:
    if result["points"] != expected:
        raise RuntimeError(f"exported {result['points']:,} points of {expected:,}")
    return result


def run() -> dict:
    root, build, built_now = fixture()
    small, big = min(SIZES), max(SIZES)
    batch_size = load_backup_policy().defaults.batch_size
    runs = {}
    for size in (small, big):
        print(f"  export_collection, {size:,} points ...", flush=True)
        runs[f"export_{size}"] = _check(_sample("export", root / str(size), batch_size), size)
    available = _available_bytes()
    fits = [n for n in SIZES if n * NAIVE_BYTES_PER_POINT <= available // 2]
    baseline_points = max(fits or [small])
    print(f"  naive scroll + json.dump, {baseline_points:,} points ...", flush=True)
    naive = _check(_sample("naive", root / str(baseline_points), batch_size), baseline_points)
    runs[f"naive_{baseline_points}"] = naive
    ours, ours_small = runs[f"export_{big}"], runs[f"export_{small}"]
    flatness = f"own_memory_mib_{big // 1000}k_vs_{small // 1000}k"
    measured = {
        "points_per_s": ours["points_per_s"],
        "own_memory_mib": ours["own_memory_mib"],
        flatness: ours["own_memory_mib"],
    }
    baseline = {
        "points_per_s": naive["points_per_s"],
        "own_memory_mib": naive["own_memory_mib"],
        flatness: ours_small["own_memory_mib"],
    }
    ratio = {k: round(measured[k] / max(baseline[k], 0.1), 2) for k in measured}
    return {
        "name": "qdrant_export",
        "what": f"export_collection of {big:,} points x {DIM}-dim float32 + payloads, embedded "
        f"Qdrant, batch_size {batch_size} (last figure: own memory at {big:,} over {small:,})",
        "baseline_what": f"naive export of {baseline_points:,} points: one scroll of every point "
        "into a list, then one json.dump",
        "baseline_points": baseline_points,
        "batch_size": batch_size,
        "measured": measured,
        "baseline": baseline,
        "ratio": ratio,
        "goals": {
            "points_per_s": f">= {THROUGHPUT_GOAL}x the naive export",
            flatness: f"<= {FLATNESS_GOAL} (flat)",
        },
        "goals_met": {
            "points_per_s": ratio["points_per_s"] >= THROUGHPUT_GOAL,
            flatness: ratio[flatness] <= FLATNESS_GOAL,
        },
        "own_memory": "peak RSS during the export minus RSS once the collection is open",
        "runs": runs,
        "fixture": {"path": str(root), "built_this_run": built_now, "build": build},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
