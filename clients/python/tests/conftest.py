from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    path = Path(os.environ.get("SIBYL_CLIENT_VECTORS", REPO / "aggregator" / "vectors" / "client_vectors.json"))
    return json.loads(path.read_text())
