"""A small HTTP/1.1 server on trio for the metrics and admin endpoints.

h11 does the parsing (a sans-IO library, like our own core), so this module is only
the socket loop and its limits: a cap on concurrent connections, on header and body
size, and a deadline per request. One request per connection keeps it simple; the
clients are Prometheus and the CLI, not browsers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h11
import trio

log = logging.getLogger("polnet.http")

MAX_CONNECTIONS = 32
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024
REQUEST_DEADLINE_S = 10.0
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    body: bytes


Handler = Callable[[Request], Awaitable[Response]]
Routes = Mapping[tuple[str, str], Handler]


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def serve_http(
    routes: Routes,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `routes` until cancelled; reports the bound port when listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        if limiter.available_tokens == 0:
            await stream.aclose()  # shed load rather than queue unboundedly
            return
        async with limiter, stream:
            with trio.move_on_after(REQUEST_DEADLINE_S):
                await _one_request(stream, routes)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _one_request(stream: trio.SocketStream, routes: Routes) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        request = await _read_request(stream, conn)
        handler = _route(routes, request)
        response = await handler(request)
    except _Refused as exc:
        response = Response(exc.status, _error_body(str(exc)))
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        return
    except Exception:  # a bug in one handler must not take the endpoint down
        log.exception("http handler failed")
        response = Response(500, _error_body("internal error"))
    await _write_response(stream, conn, response)


def _route(routes: Routes, request: Request) -> Handler:
    handler = routes.get((request.method, request.path))
    if handler is not None:
        return handler
    if any(path == request.path for _, path in routes):
        raise _Refused(405, f"method {request.method} not allowed on {request.path}")
    # Prefix routes ("/account/") take the rest of the path as an argument.
    for (method, path), candidate in routes.items():
        if path.endswith("/") and request.path.startswith(path) and method == request.method:
            return candidate
    raise _Refused(404, f"no such endpoint {request.path}")


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> Request:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_CHUNK)
            conn.receive_data(data)
            if not data and head is None:
                raise trio.BrokenResourceError("client closed before a request")
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise _Refused(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = head.target.decode("ascii", "replace")
            path, _, query = target.partition("?")
            return Request(head.method.decode("ascii", "replace"), path, query, bytes(body))
        else:
            raise h11.RemoteProtocolError("unexpected HTTP event")


async def _write_response(stream: trio.SocketStream, conn: h11.Connection, response: Response) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
    ]
    try:
        await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=response.body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, h11.LocalProtocolError):
        return


def _error_body(message: str) -> bytes:
    import json

    return json.dumps({"error": message}).encode()
