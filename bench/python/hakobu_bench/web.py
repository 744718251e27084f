"""What the HTTP and WebSocket methods share: a FastAPI app under uvicorn in the peer, real clients in the sender.

The sender binds 127.0.0.1:0, listens, hands the listening socket to the peer
(``pass_fds``) and closes its own copy: there is no port race, a request made
before the server runs waits in the listen backlog, and once the peer is gone
the kernel refuses or resets connections (the sender fails instead of hanging).
The peer serves the app with uvicorn (its default event loop and HTTP and
WebSocket implementations) on that socket until the sender's stop request.
The sender keeps one connection for the whole run: an ``httpx.Client``
(keep-alive) for HTTP, the ``websockets`` library's synchronous client for
WebSocket.

No ``from __future__ import annotations`` in this module: FastAPI reads the
endpoints' annotations (``Request``, ``WebSocket``) at run time, and those
classes are imported in the functions that build the apps (the registry
imports every method module, FastAPI installed or not).
"""

import inspect
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, Union, cast

import numpy as np

from .channel import Channel, Echo, PeerEnd, PeerFailed

if TYPE_CHECKING:
    import httpx

INSTALL = "pip install fastapi uvicorn httpx websockets   (dependencies of hakobu-bench)"

_BACKLOG = 16  # connections made before uvicorn runs wait here
_READY_WITHIN = 60.0  # s for the peer to start and answer its first request
_ATTEMPT = 10.0  # s for one readiness attempt (the peer imports FastAPI first)
_POLL = 1.0  # s: a WebSocket receive wakes up this often to check that the peer lives
_STOP_WITHIN = 10.0  # s for the stop request
_IDLE = (
    3600  # s uvicorn keeps an idle keep-alive connection (its default, 5 s, is shorter than a 1 GiB check)
)
_WS_MAX_SIZE = 1 << 40  # bytes: no practical limit on a WebSocket message (uvicorn's default is 16 MiB)

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def _route(decorator: Any) -> Callable[[_Endpoint], _Endpoint]:
    """A FastAPI route decorator, typed whether FastAPI is installed or not (without it, mypy sees Any)."""
    return cast("Callable[[_Endpoint], _Endpoint]", decorator)


# --- the peer ---------------------------------------------------------------------------------


class WebPeer(PeerEnd):
    """Serves ``app`` with uvicorn on the listening socket the sender passed, until told to stop."""

    server: Any = None  # the uvicorn.Server

    def serve(self, echo: Echo) -> None:
        import uvicorn

        # socket(fileno=) reads family, type and protocol from the descriptor: asyncio then sets
        # TCP_NODELAY on accepted connections (uvicorn's fd= option would label it AF_UNIX).
        listener = socket.socket(fileno=int(self.config["fd"]))
        config = uvicorn.Config(
            self.app(echo, self.stop),
            log_level="warning",
            access_log=False,
            timeout_keep_alive=_IDLE,
            ws_max_size=_WS_MAX_SIZE,
            # Loopback, one client: no keepalive pings mid-transfer (a dead sender ends the peer
            # through parent_watch), and no permessage-deflate on random floats.
            ws_ping_interval=None,
            ws_per_message_deflate=False,
        )
        self.server = uvicorn.Server(config)
        self.server.run(sockets=[listener])

    def stop(self) -> None:
        """Called by the stop endpoint: uvicorn finishes the open requests and returns from ``run``."""
        self.server.should_exit = True

    def app(self, echo: Echo, stop: Callable[[], None]) -> Any:
        """The ASGI app; ``stop()`` ends the server."""
        raise NotImplementedError


class HttpPeer(WebPeer):
    """POST /echo with a JSON body answers JSON; GET /ready answers once the server runs; POST /stop ends it."""

    def app(self, echo: Echo, stop: Callable[[], None]) -> Any:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, PlainTextResponse, Response

        app = FastAPI()

        @_route(app.get("/ready"))
        async def ready() -> Response:
            return PlainTextResponse("ready")

        @_route(app.post("/stop"))
        async def stop_serving() -> Response:
            stop()
            return PlainTextResponse("stopping")

        # async def: one client at a time, so the work runs on the event loop without a thread hop.
        @_route(app.post("/echo"))
        async def echo_array(request: Request) -> Response:
            body = await request.body()
            echo.arrived()
            # A JSONResponse directly: FastAPI's jsonable_encoder would walk every element first.
            return JSONResponse(self.reply(body, echo))

        return app

    def reply(self, body: bytes, echo: Echo) -> dict[str, Any]:
        """Rebuilds the array from the request ``body``, has ``echo`` answer it, returns the JSON answer."""
        raise NotImplementedError


class WebSocketPeer(WebPeer):
    """A WebSocket endpoint at /ws: one exchange per message until the sender's stop message."""

    def app(self, echo: Echo, stop: Callable[[], None]) -> Any:
        from fastapi import FastAPI, WebSocket, WebSocketDisconnect

        app = FastAPI()

        @_route(app.websocket("/ws"))
        async def exchange(websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                while await self.exchange(websocket, echo):
                    pass
                await websocket.close()
            except WebSocketDisconnect:
                pass  # the sender went away without a stop message: nobody left to serve
            finally:
                stop()

        return app

    async def exchange(self, websocket: Any, echo: Echo) -> bool:
        """Receives one array (call ``echo.arrived()`` once it is in), answers it; False at the stop message."""
        raise NotImplementedError


# --- the sender -------------------------------------------------------------------------------


class WebChannel(Channel):
    """The sender's side of a uvicorn peer: the listening socket, readiness, stopping."""

    install = INSTALL

    def start_server(self) -> int:
        """Listens on 127.0.0.1 (any free port), hands the socket to a new peer, returns the port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(_BACKLOG)
            port = int(listener.getsockname()[1])
            self.spawn_peer({"fd": listener.fileno()}, pass_fds=(listener.fileno(),))
        finally:
            listener.close()  # the peer's copy is the only one: once it is gone, connecting fails
        return port

    def until_ready(self, attempt: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> Any:
        """Repeats ``attempt`` (a first request) until it succeeds, while the peer lives."""
        deadline = time.monotonic() + _READY_WITHIN
        while True:
            try:
                return attempt()
            except errors as error:
                self.check_peer()
                if time.monotonic() > deadline:
                    raise PeerFailed(
                        f"the {self.name} peer did not answer within {_READY_WITHIN:.0f} s: {error}"
                    ) from error
                time.sleep(0.05)

    def failed(self, error: BaseException) -> PeerFailed:
        """The error to raise when the connection broke: the peer usually died, its log says why."""
        deadline = time.monotonic() + 2.0
        while self.peer_alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # a dead peer's connection breaks a moment before it is reaped
        state = "is still running" if self.peer_alive() else "exited"
        return PeerFailed(
            f"the {self.name} connection broke ({type(error).__name__}: {error}); the peer {state}: {self.peer_errors()}"
        )

    def finish(self, told_to_stop: bool) -> None:
        """Waits for the peer after the stop request; kills it when the request could not be made."""
        if not told_to_stop and self.peer is not None:
            self.peer.kill()
        self.stop_peer()


class HttpChannel(WebChannel):
    """One persistent httpx connection; every array is one POST /echo with a JSON body and a JSON answer."""

    requires = ("fastapi", "uvicorn", "httpx")
    serializable = False  # JSON methods encode arrays their own way (http-shm sets it back)
    client: Optional["httpx.Client"] = None
    response: Optional["httpx.Response"] = None

    def start(self) -> None:
        import httpx

        self.transport_error: type[Exception] = httpx.TransportError
        port = self.start_server()
        # No timeout on a trip (the watchdog bounds it, a dead peer breaks the connection);
        # trust_env=False: loopback never goes through a proxy from the environment.
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(None), trust_env=False
        )
        client = self.client
        response = self.until_ready(lambda: client.get("/ready", timeout=_ATTEMPT), (httpx.TransportError,))
        if response.status_code != 200:
            raise PeerFailed(
                f"the {self.name} peer answered /ready with {response.status_code}: {self.peer_errors()}"
            )

    def to_message(self, array: np.ndarray) -> dict[str, Any]:
        """The JSON request for ``array``."""
        raise NotImplementedError

    def from_message(self, message: Any) -> np.ndarray:
        """The array rebuilt from the peer's JSON answer."""
        raise NotImplementedError

    def send(self, array: np.ndarray) -> None:
        assert self.client is not None
        try:
            # The whole exchange: the answer comes back in the same request (the peer stamps t1, t2).
            response = self.client.post("/echo", json=self.to_message(array))
        except self.transport_error as error:
            raise self.failed(error) from error
        if response.status_code != 200:
            raise PeerFailed(f"the {self.name} peer answered {response.status_code}: {self.peer_errors()}")
        self.response = response

    def receive(self) -> np.ndarray:
        assert self.response is not None
        response, self.response = self.response, None
        return self.from_message(response.json())

    def close(self) -> None:
        told = False
        if self.client is not None:
            if self.peer_alive():
                try:
                    told = self.client.post("/stop", timeout=_STOP_WITHIN).status_code == 200
                except self.transport_error:
                    pass  # the peer is gone or stuck: finish kills it
            self.client.close()
            self.client = None
        self.response = None
        self.finish(told)


Message = Union[bytes, str, memoryview]


class WebSocketChannel(WebChannel):
    """One WebSocket connection (websockets' synchronous client) to the peer's /ws endpoint."""

    requires = ("fastapi", "uvicorn", "websockets")
    stop_message: ClassVar[Union[bytes, str]]
    ws: Any = None  # websockets.sync.client.ClientConnection

    def start(self) -> None:
        from websockets.exceptions import ConnectionClosed, WebSocketException
        from websockets.sync.client import connect

        self.closed: tuple[type[Exception], ...] = (ConnectionClosed, OSError)
        port = self.start_server()
        options: dict[str, Any] = {
            "max_size": None,  # messages of any size (the default is 1 MiB)
            "compression": None,  # no permessage-deflate: it would squeeze random floats for nothing
            "ping_interval": None,  # no keepalive pings mid-transfer: receives poll check_peer instead
            "open_timeout": _ATTEMPT,
        }
        accepted = inspect.signature(connect).parameters
        if "proxy" in accepted:
            options["proxy"] = None  # websockets >= 15 would take a proxy from the environment
        if "legacy" in accepted:
            options["legacy"] = (
                True  # websockets >= 17: a connection that outlives a with-block, closed in close()
            )
        uri = f"ws://127.0.0.1:{port}/ws"
        self.ws = self.until_ready(lambda: connect(uri, **options), (OSError, WebSocketException))

    def send_messages(self, *messages: Message) -> None:
        try:
            for message in messages:
                self.ws.send(message)
        except self.closed as error:
            raise self.failed(error) from error

    def recv(self) -> Any:
        """The next message (bytes for binary frames, str for text); checks the peer while waiting."""
        while True:
            try:
                return self.ws.recv(timeout=_POLL)
            except TimeoutError:
                self.check_peer()
            except self.closed as error:
                raise self.failed(error) from error

    def close(self) -> None:
        told = False
        if self.ws is not None:
            if self.peer_alive():
                try:
                    self.ws.send(self.stop_message)
                    told = True
                except self.closed:
                    pass  # the peer is gone or stuck: finish kills it
            self.ws.close()  # the closing handshake, bounded by the client's close_timeout
            self.ws = None
        self.finish(told)
