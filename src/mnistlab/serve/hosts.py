"""Which Host and Origin headers the server answers: the guard against DNS rebinding and cross-site POSTs.

A page on another site cannot read a local server's answers, unless its domain name is made to
point at 127.0.0.1 (DNS rebinding): the browser then sends that domain as the Host header. So the
server answers only the names it was bound to, and a browser POST only from its own origin.

- A loopback bind (127.0.0.1, ::1, localhost) answers `localhost`, `127.0.0.1` and `[::1]`.
- A bind to every interface (0.0.0.0, ::) answers those, this machine's host name and any IP
  address (an IP address in the Host header cannot be a rebound domain).
- Any other bind answers the name or address it was given.
- `allowed` adds names (`--allow-host`); `"*"` turns the check off (behind a proxy that checks).

Example:
    >>> policy = host_policy("127.0.0.1")
    >>> policy.refusal({"host": "localhost:8000"}, "GET") is None
    True
    >>> policy.refusal({"host": "evil.example"}, "GET") is not None
    True
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
# Methods a browser may send cross-site without asking first, and that change nothing here.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(value: str) -> str:
    """The name in a Host header or bind address: no port, no IPv6 brackets, lower case, no final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    return name in LOOPBACK_NAMES or (_is_ip(name) and ipaddress.ip_address(name).is_loopback)


@dataclass(frozen=True)
class HostPolicy:
    """The Host names a server answers (`any_ip`: every IP address too) and those named explicitly."""

    names: frozenset[str]
    explicit: frozenset[str] = frozenset()
    any_ip: bool = False
    any_host: bool = False

    def allows(self, host: str) -> bool:
        """Whether a Host header (or an origin's host) names this server."""
        name = host_name(host)
        return self.any_host or name in self.names or (self.any_ip and _is_ip(name))

    def refusal(self, headers: Mapping[str, str], method: str) -> str | None:
        """Why a request with these headers is refused, or None when it is served."""
        host = headers.get("host")
        if host is not None and not self.allows(host):
            return (f"host {host_name(host)!r} is not served here (DNS rebinding guard); "
                    f"start the server with --allow-host {host_name(host)} to accept it")
        origin = headers.get("origin")
        if method.upper() in SAFE_METHODS or origin is None or self.any_host:
            return None
        # A browser names the page that sent the request: it must be this server's own page.
        netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
        if netloc and (netloc == (host or "").strip().lower() or host_name(netloc) in self.explicit):
            return None
        return f"requests from the page at {origin[:100]!r} are not accepted; use this server's own page"


def host_policy(bind_host: str, allowed: Iterable[str] = ()) -> HostPolicy:
    """The policy for a server bound to `bind_host`, also answering the names in `allowed` ("*": any)."""
    extra = frozenset(host_name(a) for a in allowed if a.strip() != "*")
    any_host = any(a.strip() == "*" for a in allowed)
    bind = host_name(bind_host)
    if bind in WILDCARD_BINDS:
        names = LOOPBACK_NAMES | {socket.gethostname().lower()}
        return HostPolicy(frozenset(names | extra), extra, any_ip=True, any_host=any_host)
    names = LOOPBACK_NAMES | {bind} if _is_loopback(bind) else {bind}
    return HostPolicy(frozenset(names | extra), extra, any_host=any_host)


class HostGuard:
    """ASGI middleware: answers a refused request (see `HostPolicy.refusal`) with a JSON 403."""

    def __init__(self, app: Any, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = self.policy.refusal(Headers(scope=scope), scope["method"])
            if problem is not None:
                await JSONResponse({"error": problem}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
