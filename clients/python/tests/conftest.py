from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


class LocalServer:
    """An HTTP server on a free loopback port, serving ``handler`` on a thread until ``close``."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    path = Path(os.environ.get("SIBYL_CLIENT_VECTORS", REPO / "aggregator" / "vectors" / "client_vectors.json"))
    return json.loads(path.read_text())
