"""Live test against a running devnet (SIBYL_DEVNET = its devnet.json, as
scripts/test.d/35-clients sets it): the latest value of every feed and the
newest report verify against the committee's group key."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sibyl_client import GroupKeys, SibylClient


def test_latest_values_and_reports_verify_on_a_devnet() -> None:
    path = os.environ.get("SIBYL_DEVNET")
    assert path, "set SIBYL_DEVNET to a running devnet.json (scripts/test.d/35-clients does)"
    d = json.loads(Path(path).read_text())
    if d["suite"] == "secp256k1-evm":
        keys = GroupKeys.from_hex(d["config_digest"], secp256k1_evm=d["group_key"])
    else:
        keys = GroupKeys.from_hex(d["config_digest"], ed25519=d["group_key"])
    with SibylClient([m["api_url"] for m in d["members"]], keys=keys, timeout=2) as c:
        feeds = c.feeds()
        assert feeds
        for f in feeds:
            feed_id = f.leaf.feed_id if not isinstance(f, dict) else f["feed_id"]
            latest = c.verified_latest(feed_id)
            assert latest.leaf.price == latest.value.leaf.price
        v = c.verified_report("latest")
        assert v.suites == [d["suite"]]
        points, _ = c.history(v.report.leaves[0].feed_id, limit=5)
        assert points
