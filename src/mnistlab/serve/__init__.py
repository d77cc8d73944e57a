"""`mnistlab serve`: a page to draw digits on and a JSON prediction API (FastAPI + uvicorn).

Example:
    >>> from mnistlab.serve import serve
    >>> serve("runs/fast", port=8000)        # doctest: +SKIP  (then open http://127.0.0.1:8000/)
"""

from __future__ import annotations

from typing import Any

from mnistlab.errors import MnistlabError


def build_app(run: Any, checkpoint: str = "best", **options: Any) -> Any:
    """The FastAPI app serving a run's checkpoint (options go to `create_app`, e.g. max_body)."""
    try:
        from mnistlab.serve.app import create_app
    except ImportError as exc:
        raise MnistlabError(f"serving needs fastapi and uvicorn ({exc.name} is missing): "
                            "pip install 'mnistlab[serve]'") from None
    from mnistlab.predict import Predictor

    return create_app(Predictor.from_run(run, checkpoint), **options)


def serve(run: Any, host: str = "127.0.0.1", port: int = 8000, checkpoint: str = "best") -> None:
    """Serve a run until interrupted. Binds to 127.0.0.1 by default: pass host="0.0.0.0" to expose it."""
    try:
        import uvicorn
    except ImportError:
        raise MnistlabError("serving needs uvicorn: pip install 'mnistlab[serve]'") from None
    app = build_app(run, checkpoint)
    print(f"serving {run} on http://{host}:{port}/  (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
