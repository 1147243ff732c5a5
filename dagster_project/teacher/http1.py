"""A lean HTTP/1.1 client for one endpoint: keep-alive connections on asyncio protocols.

The teacher engine's default transport. It speaks only what a chat-completions call needs: a POST with a
JSON body, and a response framed by Content-Length, chunked transfer encoding or the connection's close
(gzip and deflate bodies are decoded). Connections are kept alive and reused, one request at a time each;
the engine's worker count bounds how many are open. A reused connection that the server had closed while
it was idle (keep-alive timeout) is replaced once, transparently, when no byte of an answer came back.

Why not aiohttp: measured against the local server on this machine (2 cores, uvloop), a bare aiohttp
request loop costs ~0.3-0.4 ms of CPU per request and this client ~0.08 ms; with the engine's own work on
top (hashing, cache, validation) that is the difference between ~1,500 and ~3,000 requests per
CPU-second, i.e. whether one core keeps 1,024 requests at 500 ms latency in flight.
"""

import asyncio
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # bytes of status line + headers before the answer is called malformed


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


class ProtocolError(ConnectionError):
    """The server's bytes are not an HTTP/1.1 response this client understands."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the parser of the one response it is waiting for."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.got_bytes = False  # any byte of the current answer: a failure after this is not "stale"
        self.reusable = True
        self._reset()

    def _reset(self) -> None:
        self._status: int | None = None
        self._headers: dict[str, str] = {}
        self._framing = ""  # length | chunked | close
        self._length = 0
        self._chunks: list[bytes] = []

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._status is not None and self._framing == "close":  # the body ends where the stream does
            try:
                self._finish(bytes(self.buffer))
            except ProtocolError as error:
                waiter.set_exception(error)
            return
        waiter.set_exception(ConnectionResetError("the server closed the connection") if exc is None else exc)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buffer += data
        if self.waiter is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.reusable = False
            return
        if self.waiter.done():
            return
        try:
            self._parse()
        except ProtocolError as exc:
            self.reusable = False
            self.waiter.set_exception(exc)

    # -- the request
    async def request(self, data: bytes, first_byte_timeout_s: float | None = None) -> Response:
        """Send `data`; the response, or FirstByteTimeout when its head is not in within the limit."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.got_bytes = False
        self._reset()
        self.transport.write(data)
        timer = None
        if first_byte_timeout_s is not None:
            timer = loop.call_later(first_byte_timeout_s, self._head_overdue, first_byte_timeout_s)
        try:
            return await self.waiter
        finally:
            if timer is not None:
                timer.cancel()
            self.waiter = None

    def _head_overdue(self, limit_s: float) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done() or self._status is not None:
            return
        self.reusable = False  # its answer may still come: the connection is spoilt
        waiter.set_exception(FirstByteTimeout(f"no response head within {limit_s:g} s of sending"))

    def _parse(self) -> None:
        buf = self.buffer
        while self._status is None:  # the head; 1xx interim answers are skipped
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("response head too long")
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ProtocolError(f"malformed header line {line[:80]!r}")
                name, value = name.strip().lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            self._status, self._headers = status, headers
            connection = headers.get("connection", "").lower()
            if "close" in connection or (parts[0] == "HTTP/1.0" and "keep-alive" not in connection):
                self.reusable = False
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._framing = "chunked"
            elif "content-length" in headers:
                try:
                    self._framing, self._length = "length", int(headers["content-length"])
                except ValueError:
                    raise ProtocolError("bad Content-Length") from None
            else:
                self._framing, self.reusable = "close", False
        if self._framing == "length":
            if len(buf) >= self._length:
                body = bytes(buf[: self._length])
                del buf[: self._length]
                self._finish(body)
        elif self._framing == "chunked":
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        buf = self.buffer
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                rest = buf[end + 2 :]
                if rest.startswith(b"\r\n"):  # no trailers
                    del buf[: end + 4]
                else:
                    trailers_end = rest.find(b"\r\n\r\n")
                    if trailers_end < 0:
                        return
                    del buf[: end + 2 + trailers_end + 4]
                self._finish(b"".join(self._chunks))
                return
            if len(buf) < end + 2 + size + 2:
                return
            self._chunks.append(bytes(buf[end + 2 : end + 2 + size]))
            del buf[: end + 2 + size + 2]

    def _finish(self, body: bytes) -> None:
        encoding = self._headers.get("content-encoding", "").lower()
        try:
            if encoding == "gzip":
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                body = zlib.decompress(body)
        except zlib.error as exc:
            raise ProtocolError(f"bad {encoding} body: {exc}") from None
        if self.buffer:  # more bytes than the answer: do not reuse the connection
            self.reusable = False
        assert self.waiter is not None and self._status is not None
        self.waiter.set_result(Response(self._status, self._headers, body))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectTimeout(TimeoutError):
    """A new connection (TCP, and TLS for https) was not established within the connect timeout."""


class FirstByteTimeout(TimeoutError):
    """The response's head (status line and headers) did not come within the first-byte timeout."""


class Http1Client:
    """POSTs to `base_url`'s host over a pool of keep-alive connections (http or https).

    A new connection must be established within `connect_timeout_s` (ConnectTimeout otherwise), so a
    connect that hangs (a SYN dropped by a full listen backlog, an unreachable host) is retried after
    seconds, not after the whole request timeout. With `first_byte_timeout_s`, the response's head must
    come within that long of the request being written (FirstByteTimeout otherwise; None: no limit).
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        connect_timeout_s: float = 10.0,
        first_byte_timeout_s: float | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.path_prefix = url.path.rstrip("/")
        host_header = url.netloc.rsplit("@", 1)[-1]
        extra = "".join(
            f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in ("host", "content-length")
        )
        self._head = f"Host: {host_header}\r\n{extra}Connection: keep-alive\r\n".encode("latin-1")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        except TimeoutError:
            raise ConnectTimeout(
                f"no connection to {self.host}:{self.port} within {self.connect_timeout_s:g} s"
            ) from None
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)

    async def post(self, path: str, body: bytes, timeout_s: float) -> Response:
        """POST `body` (JSON) to `<base path><path>`; raises TimeoutError (ConnectTimeout and
        FirstByteTimeout included), OSError or ProtocolError."""
        head = b"POST %s HTTP/1.1\r\n" % (self.path_prefix + path).encode("latin-1")
        data = b"%s%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            head,
            self._head,
            len(body),
            body,
        )
        async with asyncio.timeout(timeout_s):
            while True:
                conn = None
                while self._idle and conn is None:
                    candidate = self._idle.pop()
                    conn = None if candidate.closed else candidate
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                try:
                    response = await conn.request(data, self.first_byte_timeout_s)
                except FirstByteTimeout:  # the server has the request: never resent transparently
                    self._release(conn)
                    raise
                except (ConnectionError, OSError):
                    conn.reusable = False
                    self._release(conn)
                    if reused and not conn.got_bytes:
                        continue  # a keep-alive connection the server had closed: once more, on a new one
                    raise
                except BaseException:  # a timeout or cancellation mid-answer: the connection is spoilt
                    conn.reusable = False
                    self._release(conn)
                    raise
                self._release(conn)
                return response

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
