"""The peer jobs of benchmarks/bench_peers.py: one script per framework, run in the peers' own venv.

Each script trains one job (`--job dnn` or `--job t99`) once, the way that framework's
documentation teaches it, and prints one JSON line with its training seconds and test
accuracy. Nothing here imports mnistlab.
"""
