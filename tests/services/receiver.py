"""A local HTTP endpoint that plays Slack's and Teams' incoming webhooks and a generic webhook:
it records every request (path, headers, body) and answers 200 ("ok", as Slack does), unless
told to answer a path otherwise for its next requests (a status, or a stall past the client's
timeout). The stdlib's http.server in a thread, on 127.0.0.1.
"""

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered (0: stalled, no answer)

    def json(self):
        return json.loads(self.body)


class Receiver:
    def __init__(self):
        self.requests: list[Request] = []
        self._script: dict[str, list[int | str]] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, *responses: int | str) -> None:
        """The next requests to `path` get these answers in turn (a status, or "stall": no
        answer until stop()); then 200 again."""
        with self._lock:
            self._script.setdefault(path, []).extend(responses)

    def at(self, path: str, accepted_only: bool = False) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (not accepted_only or 200 <= r.status < 300)
            ]

    def _next(self, path: str) -> int | str:
        with self._lock:
            script = self._script.get(path)
            return script.pop(0) if script else 200

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = receiver._next(self.path)
            status = 0 if answer == "stall" else int(answer)
            with receiver._lock:
                receiver.requests.append(Request(self.path, dict(self.headers), body, status))
            if answer == "stall":
                receiver._released.wait()
                return
            reply = b"ok" if status == 200 else b"invalid_payload"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler
