"""Running the app under uvicorn: the port checked and bound before "serving" is printed, and
malformed HTTP answered as JSON like every other error.

Binding the socket here, not in uvicorn, turns a bad or busy port into one clear line (uvicorn
logs the error and exits 3, or raises OverflowError for a port over 65535), and lets port 0
mean "any free port" with the real one printed.
"""

from __future__ import annotations

import errno
import json
import socket
from typing import Any

from mnistlab.errors import MnistlabError, UsageError


def check_port(port: int) -> int:
    """The port, if it is one (0..65535; 0 picks a free one).

    Raises:
        UsageError: anything else.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"--port must be a number from 0 to 65535 (0: any free port), got {port!r}")
    return port


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, ready for uvicorn.

    Raises:
        UsageError: a bad port.
        MnistlabError: the port is in use, not permitted, or the host is not an address of this machine.
    """
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart without waiting
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise MnistlabError(f"cannot serve on {where}: the port is in use (another server?); "
                                "stop it or pick another --port") from None
        if exc.errno == errno.EACCES:
            raise MnistlabError(f"cannot serve on {where}: permission denied (ports below 1024 need root); "
                                "pick another --port") from None
        raise MnistlabError(f"cannot serve on {where}: {exc.strerror or exc}; check --host") from None
    return sock


def url(sock: socket.socket) -> str:
    """http://host:port/ of a bound socket (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _json_400_protocol() -> type:
    """uvicorn's h11 protocol, answering requests h11 cannot parse (a bad Content-Length, a broken
    header line) with {"error": ...} instead of plain text."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": "malformed HTTP request (check the request line and headers, "
                                        "e.g. Content-Length)"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JsonErrorH11Protocol


def run(app: Any, sock: socket.socket) -> None:
    """Serve `app` on the bound socket until interrupted."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", http=_json_400_protocol())
    uvicorn.Server(config).run(sockets=[sock])
