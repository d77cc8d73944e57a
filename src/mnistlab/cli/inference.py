"""`mnistlab predict` (in cli/predict.py), `mnistlab export` and `mnistlab serve`: using a trained run.

Handlers import torch (and PIL, onnx, fastapi) lazily so that `mnistlab --help` stays fast.
"""

from __future__ import annotations

import argparse

from mnistlab.cli import predict

from mnistlab.cli.common import add_model_code_flags, model_code


def register(sub: argparse._SubParsersAction) -> None:
    """Add the predict, export and serve sub-commands (in this order)."""
    predict.register(sub)
    p = sub.add_parser(
        "export",
        help="export a run's model to ONNX or TorchScript (normalisation included)",
        description="Export a run's model with its normalisation built in: the input is float32 images "
        "[N, C, H, W] in [0, 1] named `image`, the output `logits` [N, classes]; the batch axis is dynamic. "
        "The export is checked against PyTorch and the largest difference printed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mnistlab export runs/fast --format onnx\n"
        "  mnistlab export runs/fast --format torchscript --out fast.pt\n",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (its best checkpoint) or a checkpoint .pt file")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file (default: RUN/export/model.onnx or RUN/export/model.torchscript.pt)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    add_model_code_flags(p)
    p.set_defaults(handler=run_export)

    p = sub.add_parser(
        "serve",
        help="a web page to draw digits and a JSON prediction API",
        description="Serve a page where you draw a digit and watch the prediction update, and the JSON API "
        "POST /api/predict. Binds to 127.0.0.1 unless told otherwise, and answers only requests addressed "
        "to the names it is bound to (a guard against DNS rebinding): add others with --allow-host.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mnistlab serve runs/fast            # then open http://127.0.0.1:8000/\n"
        "  mnistlab serve runs/fast --host 0.0.0.0 --allow-host digits.example.org\n",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (its best checkpoint) or a checkpoint .pt file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="also answer requests for HOST (a DNS name or a proxy's); repeatable; '*' answers any")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    add_model_code_flags(p)
    p.set_defaults(handler=run_serve)


def run_export(args: argparse.Namespace) -> int:
    """Export, verify and report."""
    from mnistlab.export import export_run

    result = export_run(args.run, args.format, args.out, checkpoint=args.checkpoint, code=model_code(args))
    print(f"wrote {result.path} ({result.format}, input 'image' [N, {result.in_channels}, {result.image_size}, "
          f"{result.image_size}] float32 in [0, 1], output 'logits' [N, {result.num_classes}])")
    print(f"max abs difference vs PyTorch: {result.max_diff:.2e} on {result.samples} {result.sample_source} images")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Start uvicorn with the app for this run."""
    from mnistlab.serve import serve

    serve(args.run, host=args.host, port=args.port, checkpoint=args.checkpoint, allow_hosts=args.allow_host,
          code=model_code(args))
    return 0
