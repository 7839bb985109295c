"""The leak search: is any secret value anywhere in what the runs wrote?

Searches every file under a folder (a Dagster instance: its event-log databases, compute logs,
run storage) for each value as bytes. Reports where a value was found by a short fingerprint of
the value, never the value.
"""

import hashlib
from collections.abc import Iterable
from pathlib import Path


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def leak_search(root: Path, values: Iterable[str]) -> list[str]:
    """`<file>: value <fingerprint>` for each value found in a file under `root`."""
    needles = {v.encode(): fingerprint(v) for v in values if v}
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            content = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: value {fp}" for needle, fp in needles.items() if needle in content]
    return found
