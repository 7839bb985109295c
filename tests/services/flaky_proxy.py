"""A fault injector in front of a real registry, not a fake registry: every request is forwarded
to the real one and its answer relayed, except on the paths it is told to break, where it answers
HTTP 500, stalls past the client's read timeout, holds it until healed and then forwards it, or
drops a response header instead, until healed.
It can also add latency to every request (a registry across a network), and counts the requests
it sees. The stdlib's http.server in a thread, on 127.0.0.1.
"""

import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
STALL_LIMIT_SECONDS = 120  # a stalled request is released by heal() or stop() well before this


class FlakyProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream).netloc
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request, in order
        # (path pattern, "500" | "stall" | "hold" | "drop:<response header>")
        self._faults: list[tuple[re.Pattern, str]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._latency = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def fail(self, path_pattern: str) -> None:
        """Answer 500 to requests whose path matches (re.search) `path_pattern`."""
        with self._lock:
            self._faults.append((re.compile(path_pattern), "500"))

    def stall(self, path_pattern: str) -> None:
        """Never answer requests whose path matches, until heal()."""
        with self._lock:
            self._released.clear()
            self._faults.append((re.compile(path_pattern), "stall"))

    def hold(self, path_pattern: str) -> None:
        """Keep requests whose path matches waiting until heal(), then forward them."""
        with self._lock:
            self._released.clear()
            self._faults.append((re.compile(path_pattern), "hold"))

    def delay(self, seconds: float) -> None:
        """Hold every request `seconds` before forwarding it, as a distant registry would."""
        self._latency = seconds

    def drop_header(self, path_pattern: str, header: str) -> None:
        """Relay answers to matching paths without `header`, as some registries send them."""
        with self._lock:
            self._faults.append((re.compile(path_pattern), f"drop:{header.lower()}"))

    def heal(self) -> None:
        """Forward everything again, and let stalled requests go (their clients gave up)."""
        with self._lock:
            self._faults.clear()
            self._released.set()

    def requests_to(self, path_pattern: str) -> int:
        pattern = re.compile(path_pattern)
        with self._lock:
            return sum(1 for _, path in self.seen if pattern.search(path))

    def _fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.seen.append((method, path))
            return next((kind for pattern, kind in self._faults if pattern.search(path)), None)


def _handler(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = proxy._fault(self.command, self.path)
            if fault == "stall":
                proxy._released.wait(STALL_LIMIT_SECONDS)
                self.close_connection = True
                return
            if fault == "hold":
                proxy._released.wait(STALL_LIMIT_SECONDS)
            if proxy._latency:
                time.sleep(proxy._latency)
            if fault == "500":
                self._answer(500, {"Content-Type": "text/plain"}, b"injected fault\n")
                return
            upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                dropped = {*HOP_BY_HOP, "content-length", (fault or "").removeprefix("drop:")}
                relayed = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
                length_header = response.getheader("Content-Length")
                self._answer(response.status, relayed, data, length_header)
            finally:
                upstream.close()

        def _answer(
            self, status: int, headers: dict, body: bytes, head_length: str | None = None
        ) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", head_length or "0")
                    self.end_headers()
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

    return Handler
