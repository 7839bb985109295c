"""Start a local server as a child process, wait until it answers, stop it by PID.

Used by the demo (`gsv demo`, `gsv dev`) for the embedded defaults and by the tests for every
real service they run on loopback.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service did not start or did not become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _default_signals() -> None:
    # A shell running us in the background ignores SIGINT/SIGTERM, and children inherit that:
    # `dagster dev` would then never stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group_alive(group: int) -> bool:
    """Whether a member of the process group still runs (zombies hold no ports or locks)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


class ManagedProcess:
    """One child process with its output in a log file; stopped by PID, never left behind."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=dict(self.env) if self.env is not None else None,
                    cwd=self.cwd,
                    # Its own process group: a stop reaches the children it spawns too.
                    start_new_session=True,
                    preexec_fn=_default_signals,
                )
            except OSError as exc:
                raise ServiceError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        return self

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll `ready` until it returns True; fail with the log's tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                raise ServiceError(f"{self.name} exited with code {code}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # not answering yet is the expected state while it starts
                pass
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the whole process group; SIGKILL what is left after `timeout`."""
        if self.proc is None:
            return
        group = self.proc.pid  # its own session: the group id is its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        # Wait for every member, not only the leader: a child may still hold a port or a lock.
        while _group_alive(group) and time.monotonic() < deadline:
            self.proc.poll()
            time.sleep(0.05)
        if _group_alive(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
