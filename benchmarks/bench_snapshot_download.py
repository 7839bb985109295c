"""Copying a Qdrant snapshot into the store: a 1 GiB snapshot against a 50 MiB one, same run.

The snapshot is served by the fake Qdrant node (tests/services/qdrant_fake.py) in its own process,
so only the copying process's memory is measured. Equal peak RSS (ratio ~1.0) shows the copy
streams; throughput covers snapshot_collection end to end (create, download, verify, delete).
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
MEASURED_BYTES = 1 << 30
BASELINE_BYTES = 50 << 20
REPEATS = 3
CLIENT = """
import json, sys, time
from gsv_pipelines.lib.backups.qdrant_snapshot import snapshot_collection
from gsv_pipelines.lib.core.store import ArtefactStore

url, store_dir = sys.argv[1], sys.argv[2]
start = time.perf_counter()
[copy] = snapshot_collection(
    "bench", ArtefactStore(store_dir), "snapshots", node_urls=[url], api_key=None, poll_seconds=0.05
)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss carries over the forking parent's size across exec.
with open("/proc/self/status") as status:
    rss_kib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
print(json.dumps({"bytes": copy.size, "seconds": seconds, "rss_kib": rss_kib}))
"""


def _sample(size: int, work: Path) -> dict:
    """One copy of a `size`-byte snapshot, by a fresh process, from a fresh fake node."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "tests.services.qdrant_fake", "--port", str(port)]
    argv += ["--collection", "bench=0", "--snapshot-size", str(size)]
    with ManagedProcess("fake Qdrant", argv, work / f"fake-{size}.log", cwd=ROOT) as fake:
        fake.wait_ready(lambda: requests.get(url, timeout=1).ok)
        store_dir = work / f"store-{size}"
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, url, str(store_dir)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["bytes"] != size:
        raise RuntimeError(f"copied {result['bytes']} bytes of a {size}-byte snapshot")
    return {
        "peak_rss_mib": round(result["rss_kib"] / 1024, 1),
        "mb_per_s": round(size / 1e6 / result["seconds"], 1),
    }


def _median(size: int, work: Path) -> dict:
    samples = [_sample(size, work / f"{size}-{i}") for i in range(REPEATS)]
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
        work = Path(tmp)
        _sample(BASELINE_BYTES, work / "warm")  # warm imports and the page cache for both sides
        baseline = _median(BASELINE_BYTES, work)
        measured = _median(MEASURED_BYTES, work)
    return {
        "name": "snapshot_download",
        "what": f"snapshot_collection copying a {MEASURED_BYTES >> 20} MiB snapshot",
        "baseline_what": f"the same copy of a {BASELINE_BYTES >> 20} MiB snapshot",
        "repeats": REPEATS,
        "measured": measured,
        "baseline": baseline,
        "ratio": {k: round(measured[k] / baseline[k], 2) for k in measured},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
