"""A listening unix socket that records what reaches it: a host service an attack must not reach."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class UnixListener:
    """Accepts connections on ``path`` in a thread, counting them and keeping every byte."""

    def __init__(self, path: Path, mode: int | None = None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        if mode is not None:
            path.chmod(mode)
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    while chunk := conn.recv(4096):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self.sock.close()
