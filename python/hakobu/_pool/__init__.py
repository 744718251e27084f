"""The engine under hakobu.Pool and hakobu.Executor, and its worker program."""
