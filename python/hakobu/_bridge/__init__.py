"""hakobu.Bridge: queues and topics across hosts over ZeroMQ.

One module per concern: ``wire`` (the frame format and its checks), ``link``
(the ZeroMQ socket of one end), ``sender`` and ``receiver`` (the two ends'
protocol), ``deliver`` (frames back into a local message), ``keys`` (CurveZMQ
key files), ``bridge`` (the public class). pyzmq is imported when a bridge is
made, so ``import hakobu`` does not need it.
"""

from __future__ import annotations

from .bridge import Bridge

__all__ = ["Bridge"]
