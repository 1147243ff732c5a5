"""The lean HTTP/1.1 client against a raw socket server that answers with hand-written bytes."""

import asyncio
import gzip
import threading

import pytest

from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherConfigError, TeacherEngine, TeacherRequest
from dagster_project.teacher.http1 import Http1Client, ProtocolError


async def serve(answers: list[bytes], close_after: set[int] = frozenset()):
    """A server that answers the i-th request (over all connections) with answers[i] and closes the
    connection after the answers whose index is in `close_after`. Returns (url, requests seen, server)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
            )
            seen.append(head + await reader.readexactly(length))
            i = len(seen) - 1
            writer.write(answers[i])
            await writer.drain()
            if i in close_after:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1", seen, server


def run(coro):
    return asyncio.run(coro)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_keep_alive_reuses_one_connection_and_sends_the_headers():
    async def main():
        url, seen, server = await serve([ok(b'{"a":1}'), ok(b'{"a":2}')])
        client = Http1Client(url, {"Authorization": "Bearer k"})
        first = await client.post("/chat/completions", b'{"q":1}', 5)
        second = await client.post("/chat/completions", b'{"q":2}', 5)
        opened = len(client._open)
        await client.close()
        server.close()
        return first, second, seen, opened

    first, second, seen, opened = run(main())
    assert (first.status, first.body, second.body) == (200, b'{"a":1}', b'{"a":2}')
    assert opened == 1
    assert (
        seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        and b"Authorization: Bearer k" in seen[0]
    )
    assert seen[0].endswith(b'\r\n\r\n{"q":1}')


def test_chunked_gzip_interim_and_close_framed_answers():
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    )
    zipped = gzip.compress(b'{"zipped":true}')
    until_close = b"HTTP/1.0 200 OK\r\n\r\nto the end"

    async def main():
        url, _, server = await serve([chunked, ok(zipped, b"Content-Encoding: gzip\r\n"), until_close], {2})
        client = Http1Client(url, {})
        out = [await client.post("/x", b"{}", 5) for _ in range(3)]
        await client.close()
        server.close()
        return out

    a, b, c = run(main())
    assert a.body == b"abcdefg" and b.body == b'{"zipped":true}' and c.body == b"to the end"


def test_a_connection_the_server_closed_while_idle_is_replaced_transparently():
    async def main():
        url, seen, server = await serve([ok(b"1", b"Connection: keep-alive\r\n"), ok(b"2")], close_after={0})
        client = Http1Client(url, {})
        await client.post("/x", b"{}", 5)
        await asyncio.sleep(0.05)  # the server has closed the kept-alive connection by now
        second = await client.post("/x", b"{}", 5)
        await client.close()
        server.close()
        return second, len(seen)

    second, n = run(main())
    assert second.body == b"2" and n == 2


def test_timeouts_and_garbage_are_errors():
    async def main():
        url, _, server = await serve([b"", b"SSH-2.0-OpenSSH\r\n\r\n"])  # 1st: never answers; 2nd: not HTTP
        client = Http1Client(url, {})
        with pytest.raises(TimeoutError):
            await client.post("/x", b"{}", 0.2)
        with pytest.raises(ProtocolError, match="status line"):
            await client.post("/x", b"{}", 5)
        await client.close()
        server.close()

    run(main())


def test_only_http_urls():
    with pytest.raises(ValueError, match="not an http"):
        Http1Client("ftp://example.com/v1", {})


def test_a_redirect_is_a_config_error_naming_the_target(tmp_path):
    """The engine does not follow a redirect (a POST would lose its body or change its URL): it says where."""
    moved = (
        b"HTTP/1.1 301 Moved Permanently\r\n"
        b"Location: https://api.example/v1/chat/completions\r\nContent-Length: 0\r\n\r\n"
    )

    async def start():
        return await serve([moved] * 4)

    loop = asyncio.new_event_loop()
    url, _, server = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        engine = TeacherEngine(
            cache=ResponseCache(tmp_path),
            env={"DISTILL_TEACHER_BASE_URL": url},
            progress=False,
            max_attempts=1,
        )
        request = TeacherRequest([{"role": "user", "content": "hi"}], "m")
        with pytest.raises(
            TeacherConfigError, match="redirected the request \\(301\\) to 'https://api.example"
        ):
            engine.run([request])
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
