"""HTTP over one or more API endpoints (members or gateways). A request goes
to the first endpoint and, on a network error or a 5xx, to the next; a 4xx is
the answer (the request itself is wrong) and is raised at once."""

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
from .margin import MAX_COMMITTEE_KEY_LEN, SIGNED_COMMAND_DOMAIN, SignedCommand
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


@dataclass(frozen=True)
class MarginSigning:
    """``GET /v1/margin/signing``: what an account owner signs besides its command."""

    domain: str
    """The signed bytes' first bytes, as text (``SIGNED_COMMAND_DOMAIN``)."""
    committee_key: bytes
    """The committee's group key the signed bytes name (32 bytes Ed25519, 33 secp256k1)."""
    signed_bytes: str
    """The layout of the signed bytes in words."""


@dataclass(frozen=True)
class MarginCommandResult:
    """The answer to a submitted signed command (200, or 201 for a self-registration)."""

    endpoint: str
    """The endpoint that answered."""
    status: int
    account: int | None
    events: list[Any]
    """The engine's events for the command, as the API renders them."""
    health: Any
    """The account's cross-margin health after it, as the API renders it, or ``None``."""


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
        return self._request(ep, "GET", path, params=params)[1]

    def _request(
        self,
        ep: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        content: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """``method`` ``ep + path``: the status and the JSON body; API errors become SibylHttpError."""
        try:
            res = self._http.request(
                method,
                ep + path,
                params={k: str(v) for k, v in (params or {}).items() if v is not None},
                content=None if content is None else content.encode("utf-8"),
                headers=None if content is None else {"content-type": "application/json"},
                timeout=self._http.timeout if timeout is None else timeout,
            )
        except httpx.HTTPError as e:
            raise SibylHttpError(ep, 0, "unreachable", f"{method} {path} failed: {e}") from None
        try:
            body = res.json()
        except ValueError:
            raise SibylHttpError(ep, res.status_code, "not_json", f"{method} {path} did not answer JSON: {res.text[:200]}") from None
        if res.is_error:
            err = body.get("error") if isinstance(body, dict) else None
            err = err if isinstance(err, dict) else {}
            raise SibylHttpError(ep, res.status_code, str(err.get("code", "http_error")), str(err.get("message", f"{method} {path}")))
        return res.status_code, body

    def margin_signing(self) -> MarginSigning:
        """``GET /v1/margin/signing``: the domain and the committee key the bytes
        an account owner signs name (pass ``committee_key`` to ``sign_command``).
        Raises SibylHttpError 503 ``no_committee_key`` if the engine takes no
        signed command, and SibylFormatError if the node signs another domain
        than this SDK (a version mismatch: its signatures would never verify)."""
        o = self.get("/v1/margin/signing")
        if not isinstance(o, dict):
            raise SibylFormatError("margin signing is not a JSON object")
        want = SIGNED_COMMAND_DOMAIN.decode()
        if o.get("domain") != want:
            raise SibylFormatError(f"the node's signed-command domain is {o.get('domain')!r}, this SDK signs {want!r}")
        key = from_hex(o.get("committee_key"), "committee_key")
        if not 1 <= len(key) <= MAX_COMMITTEE_KEY_LEN:
            raise SibylFormatError(f"committee_key has {len(key)} bytes")
        layout = o.get("signed_bytes")
        return MarginSigning(domain=want, committee_key=key, signed_bytes=layout if isinstance(layout, str) else "")

    def submit_signed(self, envelope: SignedCommand, timeout: float | None = None) -> MarginCommandResult:
        """``POST /v1/margin/signed``: submits an owner-signed command (no admin
        token: the signature authorizes it) and waits for the committee to
        order it (up to 30 s on the node; the default timeout here is 35 s or
        the client's, whichever is longer). Refusals are SibylHttpError with
        the API's code: 400 ``bad_envelope`` / ``bad_command`` /
        ``account_mismatch``, 401 ``bad_signature`` (also an envelope signed
        for another committee), 403 ``no_owner`` / ``not_signable``, 404, 409
        ``stale_nonce`` (the message gives the current nonce), 422
        (insufficient margin), 503 ``no_committee_key`` / ``busy``, 504
        ``not_ordered``. Like the reads, it goes to the next endpoint on a
        network error or a 5xx; the nonce makes that safe (an envelope applies
        at most once), but a 409 ``stale_nonce`` after such a retry can mean
        the first attempt applied: read the account's nonce
        (``GET /v1/margin/accounts/{id}``)."""
        body = envelope.to_json()
        t = timeout
        if t is None:
            configured = self._http.timeout.read
            t = max(35.0, configured if configured is not None else 0.0)
        last: Exception | None = None
        for ep in self.endpoints:
            try:
                status, o = self._request(ep, "POST", "/v1/margin/signed", content=body, timeout=t)
            except SibylHttpError as e:
                if 400 <= e.status < 500:
                    raise
                last = e
                continue
            if not isinstance(o, dict):
                raise SibylFormatError("signed command response is not a JSON object")
            events = o.get("events", [])
            if not isinstance(events, list):
                raise SibylFormatError("events is not a list")
            account = o.get("account")
            return MarginCommandResult(
                endpoint=ep,
                status=status,
                account=None if account is None else to_int(account, "account"),
                events=events,
                health=o.get("health"),
            )
        assert last is not None
        raise last

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
