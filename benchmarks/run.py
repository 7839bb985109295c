"""Run every benchmarks/bench_*.py, print a table, write one JSON per benchmark.

Each benchmark's `run()` returns its figures, a baseline measured in the same run, and their
ratio: ratios stay comparable across machines where seconds do not.
"""

import importlib
import json
import sys
from pathlib import Path

from gsv_pipelines.lib.core.settings import load_settings


def main(selected: list[str]) -> int:
    out_dir = load_settings().data_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    names = [n for n in names if not selected or n.removeprefix("bench_") in selected]
    rows, notes = [], []
    for name in names:
        print(f"running {name} ...", flush=True)
        result = importlib.import_module(f"benchmarks.{name}").run()
        (out_dir / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
        for figure, ratio in result["ratio"].items():
            rows.append(
                [
                    result["name"],
                    figure,
                    result["measured"][figure],
                    result["baseline"][figure],
                    ratio,
                ]
            )
        if "goal" in result:
            notes.append(f"{result['name']}: goal {result['goal']}")
        if "summary" in result:
            notes.append(f"{result['name']}: {result['summary']}")
        if "dagster_single_run" in result:
            notes.append(f"{result['name']}: as one Dagster run {result['dagster_single_run']}")
    header = ["benchmark", "figure", "measured", "baseline", "ratio"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    for note in notes:
        print(note)
    print(f"\nJSON per benchmark in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
