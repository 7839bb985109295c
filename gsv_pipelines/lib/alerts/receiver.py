"""The receiving end of the signed webhook: `verify`, what every receiver must do, and a small
receiver on loopback that the demo starts to show the alerts it delivers.

A receiver checks, before trusting a message: the timestamp is within REPLAY_WINDOW_SECONDS of
its clock (an old message replayed is refused), and the signature equals the HMAC-SHA256 of
`<timestamp>.<body>` under the shared secret, compared in constant time (hmac.compare_digest:
no timing hint of how much of a forged signature was right). It may also drop a delivery id
(X-GSV-Delivery) it has already seen.
"""

import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gsv_pipelines.lib.alerts.deliver import (
    REPLAY_WINDOW_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """Whether `body` was signed with `secret` at `timestamp`, within `window` of `now`."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    verified: bool | None  # None: a path that is not signed (Slack, Teams)

    def json(self):
        return json.loads(self.body)


class LocalReceiver:
    """Accepts POSTs on 127.0.0.1; on `signed_path`, only those `verify` accepts (else 401)."""

    def __init__(self, secret: str, signed_path: str):
        self.secret, self.signed_path = secret, signed_path
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> "LocalReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                verified = None
                if self.path == receiver.signed_path:
                    verified = verify(
                        receiver.secret,
                        body,
                        self.headers.get(TIMESTAMP_HEADER),
                        self.headers.get(SIGNATURE_HEADER),
                    )
                with receiver._lock:
                    receiver.received.append(Received(self.path, body, verified))
                self.send_response(401 if verified is False else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        return Handler
