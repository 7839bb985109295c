"""Loading the code location (what every run, sensor tick and `dagster dev` reload pays) against
the floor it stands on: importing Dagster itself, measured in the same run."""

import json
import statistics
import subprocess
import sys
import time

REPEATS = 5
# VmHWM, not ru_maxrss: ru_maxrss carries over the forking parent's size across exec.
RSS = "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
BASELINE = f"import dagster; {RSS}"
MEASURED = (
    "from gsv_pipelines.definitions import defs; d = defs(); "
    f"d.resolve_all_asset_specs(); d.resolve_asset_graph(); {RSS}"
)


def _sample(code: str) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"loading the code location failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start, int(out.stdout.strip().splitlines()[-1])


def _median(code: str) -> dict:
    _sample(code)  # warm the OS file cache so neither side pays for the first read from disk
    samples = [_sample(code) for _ in range(REPEATS)]
    return {
        "seconds": round(statistics.median(s for s, _ in samples), 3),
        "peak_rss_mib": round(statistics.median(r for _, r in samples) / 1024, 1),
    }


def run() -> dict:
    baseline = _median(BASELINE)
    measured = _median(MEASURED)
    return {
        "name": "code_location_load",
        "what": "load gsv_pipelines.definitions and resolve its asset graph",
        "baseline_what": "import dagster",
        "repeats": REPEATS,
        "measured": measured,
        "baseline": baseline,
        "ratio": {k: round(measured[k] / baseline[k], 2) for k in measured},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
