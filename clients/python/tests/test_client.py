"""The HTTP client against real local HTTP servers: failover to the next
endpoint on a dead one or a 5xx, a 4xx raised at once with the API's code,
and a latest value verified locally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sibyl_client import GroupKeys, SibylClient, SibylHttpError, VerifyError, merkle_root
from sibyl_client.types import report_from_json

from .conftest import LocalServer


class Api(LocalServer):
    """A tiny HTTP server answering fixed routes (path -> (status, JSON text))."""

    def __init__(self, routes: dict[str, tuple[int, str]]) -> None:
        self.routes = routes
        self.hits: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                api.hits.append(self.path)
                status, body = api.routes.get(self.path, (404, '{"error":{"code":"no_route","message":"none"}}'))
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.serve(Handler)


@pytest.fixture
def three_feeds(vectors: dict[str, Any]) -> dict[str, Any]:
    case: dict[str, Any] = next(c for c in vectors["reports"] if c["name"] == "three-feeds-odd-promotion")
    return case


def latest_body(vectors: dict[str, Any], case: dict[str, Any], index: int) -> str:
    leaf_case = next(x for x in vectors["leaves"] if x["name"] == f"three-feeds-odd-promotion/{case['report']['leaves'][index]['feed_id']}")
    leaf = case["report"]["leaves"][index]
    return json.dumps(
        {
            "feed_id": leaf["feed_id"],
            "decimals": 8,
            "round": case["report"]["header"]["round"],
            "timestamp_ms": case["report"]["header"]["timestamp_ms"],
            "price": str(leaf["price"]),
            "confidence": str(leaf["confidence"]),
            "num_observations": leaf["num_observations"],
            "observed_at_ms": leaf["observed_at_ms"],
            "leaf_index": index,
            "proof": leaf_case["proof"],
            "proof_hex": leaf_case["proof_hex"],
            "leaf_abi": leaf_case["leaf_abi"],
            "report": case["report"],
            "digest": case["digest"],
            "header_abi": case["header_abi"],
        }
    )


@pytest.fixture
def keys(vectors: dict[str, Any]) -> GroupKeys:
    k = vectors["keys"]["committee"]
    return GroupKeys.from_hex(k["config_digest"], k["ed25519"], k["secp256k1-evm"])


@pytest.fixture
def servers() -> Iterator[list[Api]]:
    made: list[Api] = []
    yield made
    for s in made:
        s.close()


def test_fails_over_and_verifies_the_latest_value(
    vectors: dict[str, Any], three_feeds: dict[str, Any], keys: GroupKeys, servers: list[Api]
) -> None:
    broken = Api({"/v1/feeds/ETH-USD/latest": (503, '{"error":{"code":"store_unavailable","message":"down"}}')})
    good = Api({"/v1/feeds/ETH-USD/latest": (200, latest_body(vectors, three_feeds, 1))})
    servers += [broken, good]
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    with SibylClient([dead, broken.url, good.url], keys=keys, timeout=2) as c:
        latest = c.verified_latest("ETH-USD")
    assert latest.leaf.price == 251_234_500_000
    assert latest.value.decimals == 8
    assert latest.proof.leaf_count == 3
    assert broken.hits == ["/v1/feeds/ETH-USD/latest"]


def test_a_tampered_leaf_is_refused(vectors: dict[str, Any], three_feeds: dict[str, Any], keys: GroupKeys, servers: list[Api]) -> None:
    body = json.loads(latest_body(vectors, three_feeds, 0))
    body["report"]["leaves"][0]["price"] += 1
    api = Api({"/v1/feeds/BTC-USD/latest": (200, json.dumps(body))})
    servers.append(api)
    with SibylClient(api.url, keys=keys) as c:
        assert c.latest("BTC-USD").leaf.price == 6_512_345_678_901_235  # read, not checked
        with pytest.raises(VerifyError) as e:
            c.verified_latest("BTC-USD")
    assert e.value.code == "BadProof"


def test_client_errors_are_raised_at_once_with_the_api_code(servers: list[Api]) -> None:
    a = Api({"/v1/feeds/NOPE/latest": (404, '{"error":{"code":"unknown_feed","message":"unknown feed \\"NOPE\\""}}')})
    b = Api({})
    servers += [a, b]
    with SibylClient([a.url, b.url]) as c:
        with pytest.raises(SibylHttpError) as e:
            c.latest("NOPE")
    assert (e.value.status, e.value.code) == (404, "unknown_feed")
    assert b.hits == []


def test_reports_history_and_candles(vectors: dict[str, Any], three_feeds: dict[str, Any], keys: GroupKeys, servers: list[Api]) -> None:
    api = Api(
        {
            "/v1/reports/2": (200, json.dumps({"report": three_feeds["report"]})),
            "/v1/feeds/BTC-USD/history?from=0&to=10": (
                200,
                json.dumps({"feed_id": "BTC-USD", "decimals": 8, "points": [
                    {"feed_id": "BTC-USD", "round": 2, "timestamp_ms": 5, "price": "42", "confidence": "1",
                     "num_observations": 3, "observed_at_ms": 4, "bid": "0", "ask": "0", "venues": 3,
                     "status": "degraded", "flags": 16, "ema": "41", "ema_confidence": "1", "volatility": "7"}],
                    "next_cursor": "5:2"}),
            ),
            "/v1/feeds/BTC-USD/history?interval=1m&from=0": (
                200,
                json.dumps({"feed_id": "BTC-USD", "decimals": 8, "interval_ms": 60000, "candles": [
                    {"start_ms": 0, "open": "1", "high": "3", "low": "-1", "close": "2", "count": 4}], "next_from": None}),
            ),
        }
    )
    servers.append(api)
    with SibylClient(api.url, keys=keys) as c:
        v = c.verified_report(2)
        assert v.suites == ["ed25519", "secp256k1-evm"]
        assert merkle_root(v.report.leaves) == report_from_json(three_feeds["report"]).header.merkle_root
        points, cursor = c.history("BTC-USD", from_ms=0, to_ms=10)
        assert (points[0].leaf.price, points[0].leaf.flag_names, cursor) == (42, ["unconfirmed_jump"], "5:2")
        candles, nxt = c.candles("BTC-USD", "1m", from_ms=0)
        assert (candles[0].low, candles[0].count, nxt) == (-1, 4, None)
