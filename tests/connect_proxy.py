"""A loopback HTTP proxy for tests: it answers HTTP CONNECT by tunnelling to one upstream port (a stand-in
for the Internet), and records each tunnel's target and Proxy-Authorization header."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tunnel:
    target: str  # host:port, as the client asked for it
    authorization: str | None


class ConnectProxy:
    """In a background thread. `upstream()` gives the port every tunnel goes to, read when a tunnel opens."""

    def __init__(self) -> None:
        self.upstream: Callable[[], int] = lambda: 0  # set before the first tunnel
        self.tunnels: list[Tunnel] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._tunnel, "127.0.0.1", 0), self._loop
        ).result(30)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def targets(self) -> set[str]:
        return {tunnel.target for tunnel in list(self.tunnels)}

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            self.tunnels.append(Tunnel(target, headers.get("Proxy-Authorization")))
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream())
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.close()
