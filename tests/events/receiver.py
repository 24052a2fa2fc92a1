"""A real HTTP webhook receiver, run by the tests in a thread: it records every request and
answers as the test tells it (2xx, an error status, slowly, a huge body, a redirect, a reset).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int  # the status answered; 0 when the connection was cut

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Answers `status` (200) to every POST; `mode` makes it hostile for a while."""

    status: int = 200
    mode: str = "ok"  # ok | slow | huge | redirect | reset
    delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    inflight: int = 0  # requests read and not yet answered
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _connections: set[socket.socket] = field(default_factory=set)
    # Set while the receiver is down: a "slow" request holds its answer until then (or 30 s).
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self
        self._stopped.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver.lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a killed replica): a real receiver
                    # never sees this as a delivery, so neither does this one.
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                mode, status = receiver.mode, receiver.status
                with receiver.lock:
                    receiver.inflight += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.inflight -= 1
                answered = 0 if mode == "reset" else (302 if mode == "redirect" else status)
                with receiver.lock:
                    receiver.requests.append(Request(headers, body, time.monotonic(), answered))
                if mode == "slow":
                    # Never answers in time: the sender's timeout has to end the attempt.
                    receiver._stopped.wait(30)
                if mode == "reset":
                    # An abortive close: the client sees a connection reset, not an answer.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    return
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("location", receiver.url + "/elsewhere")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(status)
                if mode == "huge":
                    # 200 MB that the client must not read.
                    self.send_header("content-length", str(200 * 1024 * 1024))
                    self.end_headers()
                    chunk = b"x" * 65536
                    try:
                        for _ in range(200 * 16):
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: close the listening socket and cut every open connection, so that new
        connections are refused until start() and kept-alive ones fail."""
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            open_ones, self._connections = list(self._connections), set()
        for conn in open_ones:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def seen(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def answered(self, status: int) -> int:
        """How many requests got this status."""
        return sum(1 for r in self.seen() if r.answered == status)

    def ids(self, ok_only: bool = False) -> list[str]:
        return [r.webhook_id for r in self.seen() if not ok_only or 200 <= r.answered < 300]
