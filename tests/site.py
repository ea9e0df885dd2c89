"""A real HTTP server's request handler for the tests' local site: files from the server's root,
and /fault/... paths that misbehave on purpose (flaky, rate-limited, reset, redirects, gzip,
lying about their length or charset, slow, dripping, malformed headers, ETag-aware), and
serve_site, which runs one."""

import contextlib
import gzip
import http.server
import socket
import sys
import threading
import time
from urllib.parse import unquote, urlsplit

from bench import sites


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the server's root; /fault/... paths misbehave on purpose."""

    protocol_version = "HTTP/1.1"

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=str(server.root))

    def log_message(self, *args):
        pass

    def hit(self):
        """How many times this path has been requested, this one included."""
        with self.server.lock:
            self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
            return self.server.hits[self.path]

    def send_body(self, body, content_type="text/html; charset=windows-1251", status=200, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.requests.append((self.path, dict(self.headers)))
        self.server.arrivals.append((self.path, time.monotonic()))
        if "://" in self.path:  # an absolute URL: the server is asked as a proxy, and serves its own paths
            parts = urlsplit(self.path)
            self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        if not self.path.startswith("/fault/"):
            return super().do_GET()
        fault = self.path.split("/")[2]
        page = self.server.page
        n = self.hit()
        if fault == "flaky":  # two 503s, then the page
            return self.send_body(page) if n > 2 else self.send_error(503)
        if fault == "ratelimited":  # 429 with Retry-After, then the page
            return (
                self.send_body(page)
                if n > 1
                else self.send_body(b"slow down", status=429, headers=[("Retry-After", "1")])
            )
        if fault in ("reset", "truncated"):  # headers promise the page, half of it arrives, connection drops
            if fault == "reset" and n > 1:
                return self.send_body(page)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page[: len(page) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        if fault == "stall":  # headers, then nothing for longer than the client's read timeout
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            time.sleep(3)
            self.close_connection = True
            return None
        if fault == "redirect":  # /fault/redirect/3 -> /fault/redirect/2 -> ... -> the page
            hops = int(self.path.split("/")[3])
            target = f"/fault/redirect/{hops - 1}" if hops > 1 else "/fault/ok/"
            return self.send_body(b"", status=302, headers=[("Location", target)])
        if fault == "loop":
            return self.send_body(b"", status=302, headers=[("Location", self.path)])
        if fault == "missing":
            return self.send_error(404)
        if fault == "binary":
            return self.send_body(b"\x89PNG\r\n\x1a\n" + bytes(200), content_type="image/png")
        if fault == "huge":  # no Content-Length, and it never ends
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(10_000):
                    self.wfile.write(b"<p>" + b"x" * 65536)
            except OSError:
                pass
            return None
        if fault == "liar":  # claims UTF-8, sends windows-1251
            return self.send_body(page, content_type="text/html; charset=utf-8")
        if fault == "gzip":
            return self.send_body(gzip.compress(page), headers=[("Content-Encoding", "gzip")])
        if fault == "etag":  # supports conditional requests
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return None
            return self.send_body(page, headers=[("ETag", '"v1"'), ("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")])
        if fault == "slow":  # a page dribbled out over about a second
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            for i in range(0, len(page), len(page) // 10 + 1):
                self.wfile.write(page[i : i + len(page) // 10 + 1])
                self.wfile.flush()
                time.sleep(0.1)
            return None
        if fault == "ok":
            return self.send_body(page)
        return self.misbehave(fault, page)

    def misbehave(self, fault, page):
        """The faults of hostile or broken servers; /fault/<name>/<value>: value is URL-quoted."""
        value = unquote(self.path.split("/", 3)[3]) if self.path.count("/") >= 3 else ""
        if fault == "goto":  # a redirect to the URL given
            return self.send_body(b"", status=302, headers=[("Location", value)])
        if fault == "goto-dripping":  # a redirect to /fault/ok/ whose body takes 10 s
            self.send_response(302)
            self.send_header("Location", "/fault/ok/")
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "200")
            self.end_headers()
            return self.drip(b"." * 200, pause=0.05)
        if fault == "retry-after":  # always 503, with the Retry-After given
            return self.send_body(b"busy", status=503, headers=[("Retry-After", value)])
        if fault == "length":  # the page, with the Content-Length given
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(page)
            self.close_connection = True
            return None
        if fault == "drip":  # headers, then a body that takes 10 s, a byte at a time
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "200")
            self.end_headers()
            return self.drip(page[:200], pause=0.05)
        if fault == "drip-headers":  # the status line and headers, a byte at a time for 10 s, then the page
            self.drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" + b"X-Pad: a\r\n" * 15, pause=0.05)
            with contextlib.suppress(OSError):
                self.wfile.write(f"Content-Length: {len(page)}\r\n\r\n".encode() + page)
            return None
        return self.send_error(400, f"unknown fault {fault}")

    def drip(self, data, pause):
        """`data` a byte every `pause` seconds, until it ends or the client is gone."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(pause)


class SiteServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client gone mid-exchange is what the faults provoke
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_site(root):
    """The fixture pages written under `root` and served over HTTP on 127.0.0.1 by a thread; yields
    (base url, server, pages). server.requests and server.arrivals record what came in."""
    pages = sites.write_site(root)
    server = SiteServer(("127.0.0.1", 0), SiteHandler)
    server.root, server.hits, server.requests, server.arrivals, server.lock = root, {}, [], [], threading.Lock()
    server.page = (root / pages[0][0]).read_bytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server, pages
    finally:
        server.shutdown()
        server.server_close()
