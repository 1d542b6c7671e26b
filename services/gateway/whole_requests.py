"""gunicorn's threaded worker, giving a thread only to a request that has wholly arrived.

gunicorn's `gthread` worker hands a connection to a thread as soon as its first bytes arrive;
the thread then blocks reading the rest. 64 clients trickling headers or a body hold all 64
threads, and an honest request waits behind them (issue 22: `/healthz` timed out). Here the
worker's own event loop, which already watches idle kept-alive connections, reads each request
first: headers within `CLIENT_READ_TIMEOUT_S`, then the body with no pause longer than that
(kept in memory up to a megabyte, on disk beyond). Only then does a thread parse it, from
those bytes. A slow client costs a socket and a few kilobytes, never a thread or an upload slot.

Refused here, before any thread: a body without Content-Length (411), one over the request
limit (413, before it is read) and headers over `MAX_HEAD_BYTES` (431). A request is never
read past its own end, so a pipelined next request waits in the socket for its turn.
This works with gunicorn's gthread internals (TConn, the poller, `enqueue_req`): the version
is pinned in requirements.txt, and tests/services/test_slow_clients.py runs it for real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from typing import IO

from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import TConn, ThreadWorker

from services.gateway.request_body import BODY_READ_BUFFER_BYTES, SPOOL_ABOVE_BYTES

# Request line and headers together; a browser sends under 2 KB, a big cookie jar under 16 KB.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_RECEIVE_BYTES = 64 * 1024
# After a refusal, what the client still sends is read and dropped for this long before the
# socket is closed: closing with unread bytes resets the connection, and the client's network
# stack may then discard the answer before the client reads it (nginx's lingering close).
LINGER_S = 2.0


class Arrival:
    """One request being read by the event loop: its head, then its body, and its deadline."""

    def __init__(self, conn: TConn, *, read_timeout_s: float, max_body_bytes: int) -> None:
        self.conn = conn
        self.read_timeout_s = read_timeout_s
        self.max_body_bytes = max_body_bytes
        # The head has read_timeout_s in all; the body, read_timeout_s from each piece to the next.
        self.deadline = time.monotonic() + read_timeout_s
        self.head = bytearray()
        self.head_complete = False
        # Closed by chunks() once the thread has read it, or by the worker's _drop.
        self.body: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_ABOVE_BYTES)  # noqa: SIM115
        self.body_left = 0
        self.lingering = False

    def receive(self) -> bytes | None:
        """Read what the socket holds. None: more to come; b"": complete; else an answer to send and close.

        Raises ConnectionError when the client went away.
        """
        if not self.head_complete:
            answer = self._receive_head()
            if answer is not None or not self.head_complete:
                return answer
        elif self.body_left:
            data = self.conn.sock.recv(min(self.body_left, BODY_READ_BUFFER_BYTES))
            if not data:
                raise ConnectionError("the client closed the connection mid-body")
            self.body.write(data)
            self.body_left -= len(data)
            self.deadline = time.monotonic() + self.read_timeout_s
        return b"" if self.body_left == 0 else None

    def _receive_head(self) -> bytes | None:
        # Peek, then take only up to the head's end: bytes after it belong to the body (read
        # below, counted) or to the next request (left in the socket).
        peeked = self.conn.sock.recv(_RECEIVE_BYTES, socket.MSG_PEEK)
        if not peeked:
            raise ConnectionError("the client closed the connection before its request")
        search_from = max(len(self.head) - len(_HEAD_END) + 1, 0)
        found = (bytes(self.head[search_from:]) + peeked).find(_HEAD_END)
        take = len(peeked) if found < 0 else found + search_from + len(_HEAD_END) - len(self.head)
        self.head += self.conn.sock.recv(take)
        if found >= 0:
            self.head_complete = True
            return self._read_framing()
        if len(self.head) > MAX_HEAD_BYTES:
            message = f"the request line and headers may have at most {MAX_HEAD_BYTES} bytes"
            return _answer(431, "headers_too_large", message)
        return None

    def _read_framing(self) -> bytes | None:
        """Decide from the head how much body follows; an answer if the request is refused here."""
        lines = bytes(self.head).split(b"\r\n")
        fields = [line.partition(b":") for line in lines[1:] if line]
        names = [name.strip().lower() for name, _, _ in fields]
        if b"transfer-encoding" in names:
            return _answer(411, "length_required", "send the body with a Content-Length (chunked bodies are refused)")
        lengths = {value.strip() for name, _, value in fields if name.strip().lower() == b"content-length"}
        if not lengths:
            return b""  # no body
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            return b""  # malformed: handed on as it is, gunicorn's parser answers 400
        self.body_left = int(next(iter(lengths)))
        if self.body_left > self.max_body_bytes:
            return _answer(
                413, "request_entity_too_large", f"the request body may have at most {self.max_body_bytes} bytes"
            )
        if b"expect" in names:
            # The client waits for this before sending its body; gunicorn must not send it again.
            self.conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            kept = [line for line in lines if not line.lower().startswith(b"expect:")]
            self.head = bytearray(b"\r\n".join(kept))
        return None if self.body_left else b""

    def chunks(self) -> Iterator[bytes]:
        """The whole request as gunicorn's parser reads it: head, then body in large pieces."""
        yield bytes(self.head)
        self.body.seek(0)
        try:
            while piece := self.body.read(BODY_READ_BUFFER_BYTES):
                yield piece
        finally:
            self.body.close()


def _answer(status: int, code: str, message: str) -> bytes:
    """A whole HTTP response in the gateway's error shape, sent before the connection is closed."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    reason = {411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class WholeRequestWorker(ThreadWorker):
    """gthread, with every request read whole by the event loop before a thread parses it."""

    # Set by the gateway's server before it forks the workers (services/gateway/__main__.py).
    read_timeout_s = 10.0
    max_body_bytes = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[TConn, Arrival] = {}

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._await_request(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has a next request coming: read it whole first, too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)

    def _await_request(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        arrival = Arrival(conn, read_timeout_s=self.read_timeout_s, max_body_bytes=self.max_body_bytes)
        self.arrivals[conn] = arrival
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, arrival))

    def _on_readable(self, arrival: Arrival, _sock: socket.socket) -> None:
        try:
            if arrival.lingering:
                if not arrival.conn.sock.recv(_RECEIVE_BYTES):
                    self._drop(arrival)
                return
            outcome = arrival.receive()
        except (ConnectionError, OSError):
            self._drop(arrival)
            return
        if outcome is None:
            return
        if outcome:
            self._refuse(arrival, outcome)
            return
        self._stop_watching(arrival)
        conn = arrival.conn
        # A parser over the bytes already read; gunicorn's thread then never reads the socket.
        conn.parser = RequestParser(self.cfg, arrival.chunks(), conn.client)
        conn.initialized = True
        self.enqueue_req(conn)

    def _stop_watching(self, arrival: Arrival) -> None:
        self.arrivals.pop(arrival.conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(arrival.conn.sock)

    def _refuse(self, arrival: Arrival, answer: bytes) -> None:
        """Send the answer, then read and drop the rest of the request for LINGER_S before closing."""
        arrival.body.close()
        try:
            arrival.conn.sock.send(answer)  # small: fits the socket's buffer at once
            arrival.conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(arrival)
            return
        arrival.lingering = True
        arrival.deadline = time.monotonic() + LINGER_S

    def _drop(self, arrival: Arrival) -> None:
        self._stop_watching(arrival)
        arrival.body.close()
        self.nr_conns -= 1
        arrival.conn.close()

    def murder_pending(self) -> None:
        """Also close the requests that missed their deadline (called once a second by gunicorn's loop)."""
        super().murder_pending()
        now = time.monotonic()
        for arrival in [arrival for arrival in self.arrivals.values() if arrival.deadline <= now]:
            self._drop(arrival)
