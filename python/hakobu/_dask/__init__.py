"""hakobu on Dask: the same Pool and Executor on a ``dask.distributed`` cluster, and a ``hakobu://``
comm through which Dask processes on one host exchange messages in shared memory.

- ``engine``: the engine behind ``hakobu.Pool(engine="dask")`` and
  ``hakobu.Executor(client=...)``.
- ``comm``: the ``hakobu://`` transport, registered with Dask through the
  ``distributed.comm.backends`` entry point (pyproject.toml).

Importing this package imports nothing: Dask is an optional extra
(``pip install "hakobu[dask]"``), imported by these modules only.
"""
