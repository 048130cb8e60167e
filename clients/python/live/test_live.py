"""Live tests against a running devnet (SIBYL_DEVNET = its devnet.json, as
scripts/test.d/35-clients sets it): the latest value of every feed and the
newest report verify against the committee's group key; an owner-signed
margin command is submitted and refused when replayed or forged."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from sibyl_client import GroupKeys, SibylClient, SibylHttpError, generate_owner_key, sign_command


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


def test_an_owner_signs_and_submits_margin_commands_on_a_devnet() -> None:
    """Self-registration of an owned account by a signed ``create_account``;
    at another member the replay (``account_exists``), the owner's stale nonce
    and a stranger's signature refused; every member showing owner and nonce."""
    path = os.environ.get("SIBYL_DEVNET")
    assert path, "set SIBYL_DEVNET to a running devnet.json (scripts/test.d/35-clients does)"
    d = json.loads(Path(path).read_text())
    urls = [m["api_url"] for m in d["members"] if m.get("pid")]
    assert len(urls) >= 2
    secret, owner = generate_owner_key()
    account = 1_000_000_000 + secrets.randbelow(1_000_000_000)
    with SibylClient(urls, timeout=5) as c:
        params = c.margin_signing()
        if d["suite"] == "ed25519":
            # The committee key the bytes name is the group key the reports verify with.
            assert params.committee_key.hex() == d["group_key"].removeprefix("0x")
        create = sign_command(secret, params.committee_key, account, 1, {"create_account": {"account": account, "owner": owner.hex()}})
        r = c.submit_signed(create)
        assert (r.status, r.account) == (201, account), r
    with SibylClient(urls[1:], timeout=5) as other:
        # The replay: the account exists now.
        with pytest.raises(SibylHttpError) as e:
            other.submit_signed(create)
        assert (e.value.status, e.value.code) == (409, "account_exists"), e.value
        # The owner's own signature with a nonce not above the account's.
        withdraw = {"withdraw": {"account": account, "asset": "USD", "amount": 1}}
        with pytest.raises(SibylHttpError) as e:
            other.submit_signed(sign_command(secret, params.committee_key, account, 1, withdraw))
        assert (e.value.status, e.value.code) == (409, "stale_nonce"), e.value
        stranger, _ = generate_owner_key()
        with pytest.raises(SibylHttpError) as e:
            other.submit_signed(sign_command(stranger, params.committee_key, account, 2, withdraw))
        assert (e.value.status, e.value.code) == (401, "bad_signature"), e.value
    for url in urls:
        with SibylClient(url, timeout=5) as one:
            deadline = time.time() + 30
            while True:
                try:
                    a = one.get(f"/v1/margin/accounts/{account}")
                except SibylHttpError as err:
                    if err.status != 404:  # 404 until the member's engine took its turn
                        raise
                    a = {}
                if a.get("nonce") == 1 or time.time() > deadline:
                    break
                time.sleep(0.25)
            assert (a.get("owner"), a.get("nonce")) == (owner.hex(), 1), (url, a)
