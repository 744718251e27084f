"""The machinery under hakobu.Pool and hakobu.Executor (hakobu.pool): an engine in the parent,
worker processes, and what travels between them.

Parent side:

* core.py -- EngineCore, what every engine shares (this one and the Dask
  engine, hakobu._dask.engine): the interface the front-ends call, its
  states, pending tasks, feeders, sinks, breaking; the process-wide hooks
  (at exit, at fork) serving every engine.
* engine.py -- the Engine: starts workers, dispatches tasks, reads results,
  notices deaths.
* handle.py -- WorkerHandle, the engine's handle on one worker process, and
  what a dead worker held.
* tasks.py -- what the front-ends hand to an engine: Task, Sink, the states.

Both sides:

* protocol.py -- the wire protocol: message tags, frame layouts, FrameReader.
* pickling.py -- tasks, functions, results and errors pickled for the queues.
* main_script.py -- which names of the parent's main script go by reference,
  and how a worker finds them.
* tuning.py -- batching, capacities, polling and grace periods.
* threads.py -- the OpenMP/BLAS threads of each worker.

Worker side:

* worker.py -- the worker program (``python -m hakobu._pool.worker``) and
  WorkerLoop, which serves its inbox.

The worker imports protocol, pickling, main_script, tuning and threads, never
the engine or core; hakobu.pool imports an engine only when it makes the first pool.
This file imports nothing, so that starting a worker imports no more than it
needs.
"""
