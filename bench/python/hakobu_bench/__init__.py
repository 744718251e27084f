"""hakobu-bench: hakobu measured beside other ways of moving arrays between processes.

- ``hakobu bench`` (``command``): IPC methods side by side with hakobu, measured
  on this machine. Every method moves the same array between this process and
  a separately started peer process and back (``channel`` times and validates
  each round trip, ``runner`` runs methods and shapes, ``workload`` holds the
  shapes and figures); each method is one module in ``methods``. Results: a
  table on the terminal, ``bench.json`` (every figure, the machine, library
  versions) and ``bench.png`` (log-scale plot) in ``--out``.
- ``micro``: the Python micro-benchmarks (``python -m hakobu_bench.micro.queue``,
  ``.pool``, ``.latency``, ``.small``), each printing hakobu beside its baseline.

Importing this package imports nothing else: ``hakobu --help`` loads
``command`` through the ``hakobu.commands`` entry point.
"""
