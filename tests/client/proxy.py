"""A tiny TCP proxy on loopback that tests can cut, to break client connections for real."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` breaks every open connection.

    ``truncate_next``: the next server-to-client chunk carrying ``marker`` is
    forwarded only in part (half of it), then the connection is cut, so the
    client is left holding an incomplete message. ``drop_responses``: that many
    responses are swallowed (the request reached the server; its answer never
    reaches the client) and the connection cut. ``drop_answers_to``: the
    answers to the next ``drop_answers`` requests that carry these bytes are
    swallowed (the requests reach the server), their connections cut; each
    one counts in ``dropped_answers``. ``refuse``: new connections are closed
    at once.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self.truncate_next = False
        self.marker = b"data:"
        self.drop_responses = 0
        self.drop_answers_to: bytes | None = None
        self.drop_answers = 1
        self.dropped_answers = 0
        self._doomed: list[tuple[socket.socket, socket.socket]] = []
        self.refuse = False
        self.accepted = 0
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                _kill(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _kill(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self.accepted += 1
                self._pairs.append(pair)
            threading.Thread(
                target=self._pump, args=(client, upstream, pair, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, pair, True), daemon=True
            ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        pair: tuple[socket.socket, socket.socket],
        down: bool,
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not down and self._dooms(data):
                    with self._lock:
                        self._doomed.append(pair)  # before the request goes on
                if down and pair in self._doomed:
                    break
                if down and self.drop_responses > 0:
                    with self._lock:
                        self.drop_responses -= 1
                    break
                if down and self.truncate_next and self.marker in data:
                    self.truncate_next = False
                    cut_at = data.index(self.marker) + len(self.marker) + 3
                    dst.sendall(data[: min(cut_at, len(data) - 1)])
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._drop(pair)

    def _dooms(self, request: bytes) -> bool:
        """True if the answer to ``request`` is to be dropped."""
        with self._lock:
            if not self.drop_answers_to or self.drop_answers_to not in request:
                return False
            if self.dropped_answers >= self.drop_answers:
                return False
            self.dropped_answers += 1
            return True

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
                self.cuts += 1
        for sock in pair:
            _kill(sock)

    def cut(self) -> int:
        """Break every open connection; returns how many there were."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        _kill(self._listener)
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _kill(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
