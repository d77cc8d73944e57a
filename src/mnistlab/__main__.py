"""`python -m mnistlab` and `torchrun -m mnistlab` both land here."""

from mnistlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
