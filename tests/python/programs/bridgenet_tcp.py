"""A tiny TCP peer for the tests of the "hosts" harness (hakobu_bench.netns).

    bridgenet_tcp.py serve PORT TOKEN   listens on every address of its host, says "listening",
                                        then answers each connection with TOKEN (until killed)
    bridgenet_tcp.py connect ADDRESS PORT
                                        prints what the server answered, or "error ERRNO-NAME"
                                        (ECONNREFUSED, ENETUNREACH, ...) when it could not connect

Only the standard library: it runs in a network namespace, without hakobu.
"""

import errno
import socket
import sys

WATCHDOG = 30.0  # s: no call of this program waits longer


def serve(port: int, token: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen()
    print("listening", flush=True)
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(token.encode() + b"\n")


def connect(address: str, port: int) -> None:
    try:
        with socket.create_connection((address, port), timeout=WATCHDOG) as connection:
            connection.settimeout(WATCHDOG)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = connection.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError as error:
        name = errno.errorcode.get(error.errno, "timeout") if error.errno else "timeout"
        print("error", name, flush=True)
        return
    print(answer.decode().strip(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        connect(sys.argv[2], int(sys.argv[3]))
