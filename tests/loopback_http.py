"""A loopback HTTP(S) server for tests: routes are functions of the request handler.

It listens on 127.0.0.1 only; every route that streams or stalls is bounded in
time and ends when the server closes.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

__all__ = ["Server", "server"]

Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """An HTTP(S) server on 127.0.0.1 whose routes are functions of the request handler."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()
        owner = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests.append(self.path)
                route = owner.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                try:
                    route(self)
                except OSError:
                    pass  # the client hung up, as it should on a hostile source

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- routes ---------------------------------------------------------------

    def serve(self, path: str, body: bytes, *, length: int | None | str = "auto", status: int = 200,
              send_then: int | None = None, stall: bool = False) -> None:
        """``path`` answers ``body``.

        ``length`` is the Content-Length sent (None: none, close-delimited);
        with ``send_then`` only that many bytes are sent, then the server
        hangs up (a truncated body) or, with ``stall``, waits until closed.
        """
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            if length is not None:
                h.send_header("Content-Length", str(len(body) if length == "auto" else length))
            h.end_headers()
            h.wfile.write(body if send_then is None else body[:send_then])
            h.wfile.flush()
            if send_then is not None and stall:
                self.stop.wait(60)
        self.routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = route

    def drip(self, path: str, body: bytes, *, every_s: float = 0.2, headers_too: bool = False,
             for_at_most_s: float = 15.0) -> None:
        """Sends one byte every ``every_s`` (of a header line first, if ``headers_too``), then hangs up."""
        def route(h: BaseHTTPRequestHandler) -> None:
            out = h.wfile
            out.write(b"HTTP/1.0 200 OK\r\n")
            head = f"Content-Length: {len(body)}\r\n".encode()
            if headers_too:
                head = b"X-Slow: " + b"s" * 10_000 + b"\r\n" + head
            else:
                out.write(head + b"\r\n")
                out.flush()
            stream = head + b"\r\n" + body if headers_too else body
            end = time.monotonic() + for_at_most_s
            for byte in stream:
                if self.stop.is_set() or time.monotonic() > end:
                    return
                out.write(bytes([byte]))
                out.flush()
                time.sleep(every_s)
        self.routes[path] = route

    def endless(self, path: str) -> None:
        """Streams zeros without a Content-Length until the client hangs up (bounded: 30 s)."""
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.end_headers()
            end = time.monotonic() + 30
            block = b"\0" * 65536
            while not self.stop.is_set() and time.monotonic() < end:
                h.wfile.write(block)
        self.routes[path] = route


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()
