"""A local HTTP server on 127.0.0.1 for download tests: serves registered byte strings with Range support,
and can misbehave on purpose (drop the connection half-way, ignore Range, answer 404)."""

from __future__ import annotations

import http.server
import re
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        item = server.files.get(self.path.split("?")[0])
        if item is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, behaviour = item["data"], item["behaviour"]
        start = 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if m and behaviour != "no_range":
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if behaviour == "drop_once" and item["drops"] < item.get("max_drops", 1):
            item["drops"] += 1
            half = max(1, len(body) // 2)
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.close_connection = True
            import socket

            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class LocalServer:
    """``with LocalServer() as srv: srv.add('/a.zip', data, behaviour='drop_once'); url = srv.url('/a.zip')``."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, data: bytes, behaviour: str = "ok", max_drops: int = 1) -> str:
        self.httpd.files[path.split("?")[0]] = {"data": data, "behaviour": behaviour, "drops": 0, "max_drops": max_drops}
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def requests(self):
        return self.httpd.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
