"""CurveZMQ keys: files in zmq.auth's format, and the socket options that use them.

The binding end is the CurveZMQ server (its secret key; it accepts the clients
whose public keys are in ``allowed_keys``, checked by a ZAP handler that
zmq.auth.thread.ThreadAuthenticator runs); the connecting end is the client
(its own secret key and the server's public key, ``peer_key``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .. import _errors


def zmq_module() -> Any:
    """pyzmq, imported when a bridge is made (``import hakobu`` stays light)."""
    try:
        import zmq
        import zmq.auth
    except ImportError:
        raise _errors.BridgeError(
            'hakobu.Bridge needs pyzmq: pip install "hakobu[bridge]" (or pip install pyzmq)'
        ) from None
    return zmq


def write_pair(directory: str, name: str) -> tuple[str, str]:
    """Writes NAME.key (public, to give the other end) and NAME.key_secret (keep it here) in
    ``directory``; returns their paths. Refuses to overwrite an existing pair."""
    zmq = zmq_module()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise _errors.BridgeError(f"{path} exists already: remove it or choose another --name")
    made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(made_secret, 0o600)
    return str(made_public), str(made_secret)


def _load(path: str, what: str, need_secret: bool) -> tuple[bytes, Optional[bytes]]:
    zmq = zmq_module()
    if not os.path.isfile(path):
        raise _errors.BridgeError(
            f"{what} {path!r} is not a file (make a key pair with `hakobu bridge keys DIR`)"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as error:
        raise _errors.BridgeError(
            f"{what} {path!r} is not a key file of zmq.auth's format: {error}"
        ) from None
    if need_secret and not secret:
        raise _errors.BridgeError(
            f"{what} {path!r} holds no secret key: give the NAME.key_secret file, not the public NAME.key"
        )
    return public, secret


def server_options(secret_key: str) -> dict[int, Any]:
    zmq = zmq_module()
    public, secret = _load(secret_key, "secret_key", True)
    return {zmq.CURVE_SERVER: 1, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def client_options(secret_key: str, peer_key: str) -> dict[int, Any]:
    zmq = zmq_module()
    public, secret = _load(secret_key, "secret_key", True)
    server_public, _ = _load(peer_key, "peer_key", False)
    return {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def check_allowed_keys(directory: str) -> None:
    if not os.path.isdir(directory):
        raise _errors.BridgeError(
            f"allowed_keys {directory!r} is not a directory (put the clients' NAME.key public key files in one)"
        )
