"""A small HTTP server on the loopback interface, for tests of network decisions (Hub access,
downloads, wandb): it answers as a Hub endpoint, as a file server, and as a forward proxy (a
request whose target is a full URL is answered for that URL's path), and records what it was asked.

It listens on 127.0.0.1 only, on a free port, in a daemon thread; it stops when its ``with``
block ends, and on its own after ``lifetime_s`` seconds whatever the test does.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

# path -> (status, headers, body); the default answers every path with 200 and "{}".
Route = tuple[int, dict[str, str], bytes]
DEFAULT: Route = (200, {"Content-Type": "application/json"}, b"{}")


class LoopbackServer:
    def __init__(self, routes: Optional[dict[str, Route]] = None, lifetime_s: float = 60.0) -> None:
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, str]] = []  # (method, request target as sent)
        self.lifetime_s = lifetime_s
        self._server: Optional[ThreadingHTTPServer] = None
        self._timer: Optional[threading.Timer] = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self) -> list[str]:
        """The paths asked for (a proxied request's URL reduced to its path)."""
        return [urlsplit(target).path if "://" in target else target.split("?")[0] for _, target in self.requests]

    def __enter__(self) -> "LoopbackServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                owner.requests.append((self.command, self.path))
                path = urlsplit(self.path).path if "://" in self.path else self.path.split("?")[0]
                status, headers, body = owner.routes.get(path, DEFAULT)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self._server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None and self._timer is not None
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens: a connection there is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy", "WANDB_HTTP_PROXY", "WANDB_HTTPS_PROXY")


def clear_proxies(monkeypatch) -> None:
    """No proxy variable from the machine running the tests leaks into a test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
