"""A local HTTP server for the download tests: it serves a few files from memory, records every
request (its path and Range header), honours Range requests, and injects the faults a real mirror
shows: 500s for the first N requests, a connection dropped after N bytes, other bytes of the right
size, a server that ignores Range."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests: list[str] = []  # the path of every request, in order
        self.ranges: list[str | None] = []  # its Range header, None when absent
        self.fail_first = 0  # answer the first N requests with 500
        self.cut_after: int | None = None  # close the connection after this many body bytes, once
        self.wrong = False  # serve other bytes of the right size
        self.honour_range = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server
        s.requests.append(self.path)
        s.ranges.append(self.headers.get("Range"))
        if len(s.requests) <= s.fail_first:
            return self.send_error(500)
        body = s.files.get(self.path.lstrip("/"))
        if body is None:
            return self.send_error(404)
        body = body[::-1] if s.wrong else body
        start = 0
        if self.headers.get("Range") and s.honour_range:
            start = int(self.headers["Range"].removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:]
        if s.cut_after is not None:
            data, s.cut_after = data[: s.cut_after], None
            self.close_connection = True
        self.wfile.write(data)


@contextlib.contextmanager
def serving(files: dict[str, bytes]) -> Iterator[FileServer]:
    """A FileServer for `files`, running in a thread for the duration of the block."""
    server = FileServer(files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
