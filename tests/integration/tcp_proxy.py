"""A TCP proxy for tests: a real network hop that can hold requests in transit or go down.

``hold(prefix)`` keeps every request whose bytes start with ``prefix`` (an HTTP
request line, say) inside the proxy until ``release()``: the client sees a
timeout, while its request is still on its way to the server, exactly like a
packet stuck in a congested network. A released request reaches the server
even if the client has given up and closed its end meanwhile; the bytes
the server sends back on its connection are kept in ``late_answers``. ``down()`` resets
every connection and refuses new ones until ``up()``.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._hold_prefix: bytes | None = None
        self._release = threading.Event()
        self._stopping = threading.Event()
        self._down = False
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.held: list[bytes] = []  # the first line of each request held
        self.late_answers: list[bytearray] = []  # what the server sent back to held requests
        self.refused = 0  # connections reset while down
        self._start(self._accept)

    # What tests call.

    def hold(self, prefix: bytes) -> None:
        with self._lock:
            self._hold_prefix = prefix
            self._release.clear()

    def stop_holding(self) -> None:
        """New requests pass again; those held so far stay held until ``release``."""
        with self._lock:
            self._hold_prefix = None

    def release(self) -> None:
        self._release.set()

    def down(self) -> None:
        with self._lock:
            self._down = True
            sockets = list(self._sockets)
        for sock in sockets:
            _reset(sock)

    def up(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._stopping.set()
        self._release.set()
        # close() alone wakes no thread blocked in accept() on Linux (each waited out its
        # 10 s join below); shutdown() does.
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # Likewise for a thread in recv() (a server's idle keep-alive connection).
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            _reset(sock)
        for thread in self._threads:
            thread.join(10)

    # The plumbing.

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-proxy")
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._down:
                self.refused += 1
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._track(client):
                _reset(client)
                continue
            self._start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        held = [False]  # shared with the answering thread: the next answer is to a held request
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    # The client gave up: keep the server's side open so that a request
                    # already passed on is still answered (the answer goes nowhere).
                    if upstream is None:
                        _reset(client)
                    return
                with self._lock:
                    prefix = self._hold_prefix
                if prefix is not None and data.startswith(prefix):
                    held[0] = True
                    with self._lock:
                        self.held.append(data.split(b"\r\n", 1)[0])
                    while not self._release.wait(0.1):
                        if self._stopping.is_set():
                            return
                if upstream is None:
                    upstream = socket.create_connection(self._target)
                    if not self._track(upstream):
                        _reset(upstream)
                        return
                    self._start(self._answer, upstream, client, held)
                upstream.sendall(data)
        except OSError:
            if upstream is not None:
                _reset(upstream)
            _reset(client)

    def _answer(self, upstream: socket.socket, client: socket.socket, held: list[bool]) -> None:
        answer: bytearray | None = None
        try:
            while data := upstream.recv(65536):
                with self._lock:
                    if held[0]:
                        self.late_answers.append(bytearray())
                        answer = self.late_answers[-1]
                        held[0] = False
                    if answer is not None:
                        answer += data  # the client is gone: all that follows is its answer
                # If the client is gone, keep reading so that the server can finish.
                with suppress(OSError):
                    client.sendall(data)
        except OSError:
            pass
        finally:
            _reset(upstream)
            _reset(client)


def _reset(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


@contextmanager
def proxy_to(url: str) -> Iterator[Proxy]:
    """A proxy in front of ``http://host:port``; yields it, closes it when the block ends."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    try:
        yield proxy
    finally:
        proxy.close()
