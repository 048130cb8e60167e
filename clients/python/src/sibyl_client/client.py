"""HTTP reads over one or more API endpoints (members or gateways). A read
goes to the first endpoint and, on a network error or a 5xx, to the next; a
4xx is the answer (the request itself is wrong) and is raised at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .types import (
    MerkleProof,
    ReportLeaf,
    SibylFormatError,
    SignedReport,
    from_hex,
    leaf_from_json,
    proof_from_json,
    report_from_json,
    to_int,
)
from .verify import GroupKeys, VerifiedReport, verify_leaf, verify_report


class SibylHttpError(Exception):
    """An error answer of the API (``{"error": {"code", "message"}}``) or a failed request."""

    def __init__(self, endpoint: str, status: int, code: str, message: str) -> None:
        prefix = f"HTTP {status} {code}: " if status else ""
        super().__init__(f"{endpoint}: {prefix}{message}")
        self.endpoint = endpoint
        self.status = status
        self.code = code


@dataclass(frozen=True)
class FeedValue:
    """A feed's value in one signed report."""

    leaf: ReportLeaf
    decimals: int | None
    round: int
    timestamp_ms: int


@dataclass(frozen=True)
class Latest:
    """``GET /v1/feeds/{id}/latest``: the value and everything needed to verify it."""

    value: FeedValue
    report: SignedReport
    leaf_index: int
    leaf: ReportLeaf
    proof: MerkleProof
    digest: bytes


@dataclass(frozen=True)
class Candle:
    start_ms: int
    open: int
    high: int
    low: int
    close: int
    count: int


def _feed_value(v: Any, what: str) -> FeedValue:
    if not isinstance(v, dict):
        raise SibylFormatError(f"{what} is not a JSON object")
    d = v.get("decimals")
    return FeedValue(
        leaf=leaf_from_json(v, what),
        decimals=d if isinstance(d, int) else None,
        round=to_int(v.get("round"), f"{what}.round"),
        timestamp_ms=to_int(v.get("timestamp_ms"), f"{what}.timestamp_ms"),
    )


class SibylClient:
    """Reads feeds, history and signed reports from a Sibyl API.

    >>> with SibylClient(["http://127.0.0.1:8080"], keys=keys) as c:  # doctest: +SKIP
    ...     latest = c.verified_latest("BTC-USD")
    """

    def __init__(
        self,
        endpoints: str | list[str],
        keys: GroupKeys | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not eps:
            raise ValueError("give at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in eps]
        self.keys = keys
        self._http = httpx.Client(timeout=timeout, transport=transport, headers={"accept": "application/json"})

    def __enter__(self) -> SibylClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` from the first endpoint that answers; the JSON body (integers exact)."""
        last: Exception | None = None
        for ep in self.endpoints:
            try:
                return self._get_one(ep, path, params)
            except SibylHttpError as e:
                if 400 <= e.status < 500:
                    raise
                last = e
        assert last is not None
        raise last

    def _get_one(self, ep: str, path: str, params: dict[str, Any] | None) -> Any:
        try:
            res = self._http.get(ep + path, params={k: str(v) for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as e:
            raise SibylHttpError(ep, 0, "unreachable", f"GET {path} failed: {e}") from None
        try:
            body = res.json()
        except ValueError:
            raise SibylHttpError(ep, res.status_code, "not_json", f"GET {path} did not answer JSON: {res.text[:200]}") from None
        if res.is_error:
            err = body.get("error") if isinstance(body, dict) else None
            err = err if isinstance(err, dict) else {}
            raise SibylHttpError(ep, res.status_code, str(err.get("code", "http_error")), str(err.get("message", f"GET {path}")))
        return body

    def _need(self, keys: GroupKeys | None) -> GroupKeys:
        k = keys or self.keys
        if k is None:
            raise ValueError("verifying needs the committee keys: pass keys=GroupKeys.from_hex(...)")
        return k

    def feeds(self) -> list[FeedValue | dict[str, Any]]:
        """``GET /v1/feeds``: each feed's latest value (a plain dict for a feed with none yet)."""
        body = self.get("/v1/feeds")
        feeds = body.get("feeds") if isinstance(body, dict) else None
        if not isinstance(feeds, list):
            raise SibylFormatError("feeds is not a list")
        return [f if isinstance(f, dict) and f.get("round") is None else _feed_value(f, f"feeds[{i}]") for i, f in enumerate(feeds)]

    def latest(self, feed_id: str) -> Latest:
        """``GET /v1/feeds/{id}/latest``, not yet verified (see ``verified_latest``)."""
        o = self.get(f"/v1/feeds/{quote(feed_id, safe='')}/latest")
        if not isinstance(o, dict):
            raise SibylFormatError("latest is not a JSON object")
        report = report_from_json(o.get("report"))
        index = to_int(o.get("leaf_index"), "leaf_index")
        if not 0 <= index < len(report.leaves) or report.leaves[index].feed_id != feed_id:
            raise SibylFormatError(f"leaf {index} of the report is not feed {feed_id}")
        return Latest(
            value=_feed_value(o, "latest"),
            report=report,
            leaf_index=index,
            leaf=report.leaves[index],
            proof=proof_from_json(o.get("proof")),
            digest=from_hex(o.get("digest"), "digest", 32),
        )

    def verified_latest(self, feed_id: str, keys: GroupKeys | None = None) -> Latest:
        """The latest value, its leaf verified by Merkle proof and the committee's signatures.
        Use ``.leaf`` (the signed values), not the node's rendering in ``.value``."""
        latest = self.latest(feed_id)
        verify_leaf(latest.report.header, latest.leaf, latest.proof, latest.report.signatures, self._need(keys))
        return latest

    def report(self, round_: int | str = "latest") -> SignedReport:
        """``GET /v1/reports/{round}`` (``latest`` for the newest), not yet verified."""
        o = self.get(f"/v1/reports/{round_}")
        if not isinstance(o, dict):
            raise SibylFormatError("report response is not a JSON object")
        return report_from_json(o.get("report"))

    def verified_report(self, round_: int | str = "latest", keys: GroupKeys | None = None) -> VerifiedReport:
        return verify_report(self.report(round_), self._need(keys))

    def history(
        self, feed_id: str, from_ms: int | None = None, to_ms: int | None = None, limit: int | None = None, cursor: str | None = None
    ) -> tuple[list[FeedValue], str | None]:
        """Raw points in ``[from_ms, to_ms)`` and the cursor of the next page (``None`` at the end)."""
        o = self.get(
            f"/v1/feeds/{quote(feed_id, safe='')}/history", {"from": from_ms, "to": to_ms, "limit": limit, "cursor": cursor}
        )
        points = o.get("points") if isinstance(o, dict) else None
        if not isinstance(points, list):
            raise SibylFormatError("points is not a list")
        nxt = o.get("next_cursor")
        return [_feed_value(p, f"points[{i}]") for i, p in enumerate(points)], nxt if isinstance(nxt, str) else None

    def candles(
        self, feed_id: str, interval: str, from_ms: int | None = None, to_ms: int | None = None, limit: int | None = None
    ) -> tuple[list[Candle], int | None]:
        """Candles of ``interval`` (``1m``, ``1h``…) and the ``from`` of the next page (``None`` at the end)."""
        o = self.get(
            f"/v1/feeds/{quote(feed_id, safe='')}/history", {"interval": interval, "from": from_ms, "to": to_ms, "limit": limit}
        )
        cs = o.get("candles") if isinstance(o, dict) else None
        if not isinstance(cs, list):
            raise SibylFormatError("candles is not a list")
        out = []
        for i, c in enumerate(cs):
            if not isinstance(c, dict):
                raise SibylFormatError(f"candles[{i}] is not a JSON object")
            out.append(
                Candle(
                    *(to_int(c.get(k), f"candles[{i}].{k}") for k in ("start_ms", "open", "high", "low", "close", "count"))
                )
            )
        nxt = o.get("next_from")
        return out, None if nxt is None else to_int(nxt, "next_from")
