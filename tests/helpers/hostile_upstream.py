"""An upstream that fails in every way HTTP lets it, in its own process, written byte by byte.

Its own process, so that a test measuring what a failed poll leaves behind in the daemon's process
counts none of the upstream's objects; byte by byte (a plain asyncio server, no HTTP library), so
that it can lie as no library would let it: a Content-Length shorter or longer than the body, an
endless body, a redirect to itself. `python tests/helpers/hostile_upstream.py` prints its port and serves
until its stdin closes. The path picks the behaviour: see ANSWERS.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import sys

#: Sizes, in bytes, that tests set their limits against.
BIG = 4 * 1024 * 1024
MANY = 20_000


def _lines(count: int, start: int = 0) -> bytes:
    # Series told apart by name, not by a label value: the parser interns label values, and the
    # interpreter's table of interned strings, resized as they come and go, would blur what tests measure.
    return b"".join(b"hostile_gauge_%d 1\n" % i for i in range(start, start + count))


def _response(body: bytes, *, status: str = "200 OK", headers: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {size}\r\n{headers}\r\n"
    return head.encode() + body


def _answers() -> dict[str, bytes]:
    many = _lines(MANY)
    return {
        "/status": _response(b"<html>" + b"x" * (1024 * 1024) + b"</html>", status="500 Internal Server Error"),
        "/big": _response(_lines(BIG // 20)),
        "/bomb": _response(gzip.compress(b"\n" * (64 * 1024 * 1024), 1), headers="Content-Encoding: gzip\r\n"),
        "/unparsable": _response(_lines(MANY) + b"{{{ this is not exposition text\n"),
        "/many": _response(many),
        "/redirect": _response(b"", status="302 Found", headers="Location: /redirect\r\n"),
        "/short": _response(_lines(1000), length=100),
        "/long": _response(_lines(1000), length=10 * 1000 * 24),
        "/not-http": b"SSH-2.0-OpenSSH_9.6\r\n" * 20,
    }


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: dict[str, bytes]) -> None:
    try:
        while path := await _next_request(reader):
            await _answer(path, writer, answers)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _next_request(reader: asyncio.StreamReader) -> str:
    """The path of the next request on a kept-alive connection; "" once the client closed it."""
    try:
        request = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return ""
    return request.split(b" ", 2)[1].decode()


async def _answer(path: str, writer: asyncio.StreamWriter, answers: dict[str, bytes]) -> None:
    """Answer one request; a connection the answer leaves unusable (/long, /cut) is closed."""
    if path == "/hang":
        await asyncio.sleep(3600)
    elif path == "/endless":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\r\n")
        chunk = _lines(4000)
        while True:
            writer.write(chunk)
            await writer.drain()
    elif path == "/cut":  # a Content-Length the connection closes before
        writer.write(_response(_lines(1000), length=10 * 1000 * 24)[:20_000])
        await writer.drain()
        writer.close()
    else:
        writer.write(answers.get(path, _response(b"not found\n", status="404 Not Found")))
        await writer.drain()
        if path == "/long":
            writer.close()


async def main() -> None:
    answers = _answers()
    server = await asyncio.start_server(lambda r, w: _serve(r, w, answers), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()  # the test closed our stdin: done
    os._exit(0)  # connections still hanging on purpose are not worth a shutdown


if __name__ == "__main__":
    asyncio.run(main())
