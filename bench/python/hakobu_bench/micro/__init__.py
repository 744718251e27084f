"""The Python micro-benchmarks: each one a program that prints hakobu beside its baseline, measured
in the same run, with the method and the machine.

    python -m hakobu_bench.micro.queue     # Queue round trips, hand-off, copies at every alignment
    python -m hakobu_bench.micro.small     # one put + get of small messages, in one process and two
    python -m hakobu_bench.micro.latency   # small-message round trips between two programs
    python -m hakobu_bench.micro.pool      # hakobu.Pool beside multiprocessing, concurrent.futures, joblib, Ray
    python -m hakobu_bench.micro.fanout    # hakobu.Topic to 1, 2, 4 subscribers beside ZeroMQ, iceoryx2, Ray, mp

Each takes ``--help``; peers run the same module again (``python -m``).
"""
