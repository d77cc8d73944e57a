"""`mnistlab serve`: a page to draw digits on and a JSON prediction API (FastAPI + uvicorn).

Example:
    >>> from mnistlab.serve import serve
    >>> serve("runs/fast", port=8000)        # doctest: +SKIP  (then open http://127.0.0.1:8000/)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mnistlab.errors import MnistlabError


def build_app(run: Any, checkpoint: str = "best", code: Any = None, **options: Any) -> Any:
    """The FastAPI app serving a run's checkpoint (options go to `create_app`, e.g. max_body)."""
    try:
        from mnistlab.serve.app import create_app
    except ImportError as exc:
        raise MnistlabError(f"serving needs fastapi and uvicorn ({exc.name} is missing): "
                            "pip install 'mnistlab[serve]'") from None
    from mnistlab.predict import Predictor

    return create_app(Predictor.from_run(run, checkpoint, code), **options)


def serve(run: Any, host: str = "127.0.0.1", port: int = 8000, checkpoint: str = "best",
          allow_hosts: Sequence[str] = (), code: Any = None) -> None:
    """Serve a run until interrupted. Binds to 127.0.0.1 by default: pass host="0.0.0.0" to expose it.

    Args:
        run: a run folder or checkpoint file.
        host: the address to bind.
        port: the port (0: any free one; the URL printed names it).
        checkpoint: "best" or "last".
        allow_hosts: Host names to answer besides the bound address's own (see hosts.py); "*": any.
        code: a usercode.ModelCode, for a run whose model comes from a user's file.

    Raises:
        UsageError: a bad port.
        MnistlabError: the port is in use or cannot be bound; the run cannot be loaded.
    """
    from mnistlab.serve import server

    server.check_port(port)
    try:
        import uvicorn  # noqa: F401 - checked before the model is loaded

        from mnistlab.serve.hosts import host_policy
    except ImportError as exc:
        raise MnistlabError(f"serving needs fastapi and uvicorn ({exc.name} is missing): "
                            "pip install 'mnistlab[serve]'") from None
    app = build_app(run, checkpoint, code, hosts=host_policy(host, allow_hosts))
    sock = server.bind(host, port)
    print(f"serving {run} on {server.url(sock)}  (Ctrl+C to stop)", flush=True)
    server.run(app, sock)
