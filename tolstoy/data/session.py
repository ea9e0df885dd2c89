"""The requests Session of the fetch stage, with what requests leaves to its user: a wall-clock
deadline on each exchange, however slowly the server sends, and a limit on where redirects go.

requests and urllib3 time out only a read that waits longer than the read timeout, so a server
sending a byte now and then holds a read forever. Inside `Deadline(seconds)`, every socket that
awaits a response is shut down when the seconds have passed, which ends the read wherever it is
(status line, headers or body). A redirect may lead only to http(s), and never from a public
address to a private, loopback or link-local one (a public page pointing fetch at the machine's
own network); any other redirect, such as loopback to loopback, is followed.
"""

import contextlib
import ipaddress
import socket
import threading
from urllib.parse import urljoin, urlsplit

import requests
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection

_current = threading.local()  # the Deadline of the exchange this thread is making, if any


class RedirectRefused(requests.exceptions.RequestException):
    """A redirect to a place fetch does not follow."""


class Deadline:
    """Shuts down the sockets of the exchange made inside it once `seconds` have passed; `passed`
    tells a read that ended early from a server that closed the connection."""

    def __init__(self, seconds):
        self.passed = threading.Event()
        self._sockets = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock):
        self._sockets.append(sock)
        if self.passed.is_set():
            self._expire()

    def _expire(self):
        self.passed.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()
        _current.deadline = None


class _Watched:
    """A connection that hands its socket to the thread's Deadline before it awaits a response."""

    def getresponse(self):
        deadline = getattr(_current, "deadline", None)
        if deadline and self.sock:
            deadline.watch(self.sock)
        return super().getresponse()


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


WATCHED_POOLS = {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """Connections to servers, and to http(s) proxies, that a Deadline can cut short."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # a SOCKS proxy's pools are its own
            manager.pool_classes_by_scheme = WATCHED_POOLS
        return manager


def addresses(host):
    """The IP addresses `host` (a name or an address) stands for; none when it does not resolve."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):  # the request itself then fails and says why
        return []
    ips = [ipaddress.ip_address(address.split("%")[0]) for address in found]
    return [getattr(ip, "ipv4_mapped", None) or ip for ip in ips]


def inward_address(from_addresses, to_addresses):
    """The first of `to_addresses` that is not public when every one of `from_addresses` is (a
    redirect from the internet into a private, loopback or link-local network); else None."""
    if not from_addresses or not all(ip.is_global for ip in from_addresses):
        return None
    return next((ip for ip in to_addresses if not ip.is_global), None)


class GuardedSession(requests.Session):
    """A Session whose exchanges a Deadline can cut short and whose redirects stay in their place."""

    def __init__(self):
        super().__init__()
        for scheme in ("http://", "https://"):
            self.mount(scheme, _WatchedAdapter())

    def get_redirect_target(self, resp):
        try:
            location = super().get_redirect_target(resp)
            target = urljoin(resp.url, location) if location else None
            parts = urlsplit(target) if target else None
        except (UnicodeError, ValueError):
            raise RedirectRefused(f"redirect to an unreadable Location {resp.headers.get('location')!r}") from None
        if target is None:
            return None
        resp.close()  # its body is left unread: a redirect's body may never end
        if parts.scheme not in ("http", "https"):
            raise RedirectRefused(f"redirect to {target}: only http and https are followed")
        inward = inward_address(addresses(urlsplit(resp.url).hostname), addresses(parts.hostname))
        if inward:
            raise RedirectRefused(
                f"redirect from {resp.url} (a public address) to {target} ({inward}, not a public address)"
            )
        return location
