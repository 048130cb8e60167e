"""Owner-signed margin commands against the Rust reference's vectors
(daemon/margin/tests/vectors/signed_commands.json, written by
``cargo test -p sibyl-margin --test signing_vectors``): the same signed bytes,
signature and envelope text; and the client's signing and submit routes
against a local server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from sibyl_client import (
    SIGNED_COMMAND_DOMAIN,
    SibylClient,
    SibylFormatError,
    SibylHttpError,
    SignedCommand,
    command_text,
    generate_owner_key,
    owner_public_key,
    sign_command,
    signed_command_bytes,
    verify_signed_command,
)

from .conftest import REPO, LocalServer


@pytest.fixture(scope="session")
def signing() -> dict[str, Any]:
    path = Path(
        os.environ.get("SIBYL_SIGNING_VECTORS", REPO / "daemon" / "margin" / "tests" / "vectors" / "signed_commands.json")
    )
    v: dict[str, Any] = json.loads(path.read_text())
    return v


def case(signing: dict[str, Any], name: str) -> dict[str, Any]:
    c: dict[str, Any] = next(c for c in signing["cases"] if c["name"] == name)
    return c


def test_the_vectors_are_the_domain_this_sdk_signs(signing: dict[str, Any]) -> None:
    assert signing["domain"].encode() == SIGNED_COMMAND_DOMAIN
    assert len(signing["cases"]) >= 3
    assert any(c["account"] > 2**53 for c in signing["cases"])


def test_every_vector_signs_byte_for_byte(signing: dict[str, Any]) -> None:
    for c in signing["cases"]:
        name = c["name"]
        got = signed_command_bytes(c["committee_key"], c["account"], c["nonce"], c["command"])
        assert got.hex() == c["signed_bytes"], name
        assert owner_public_key(c["secret_key"]).hex() == c["owner"], name
        s = sign_command(bytes.fromhex(c["secret_key"]), bytes.fromhex(c["committee_key"]), c["account"], c["nonce"], c["command"])
        assert s.signature.hex() == c["signature"], name
        assert s.to_json() == c["envelope"], name
        assert verify_signed_command(s, c["owner"], c["committee_key"]), name
        # Not for another committee, another nonce, or an edited command.
        assert not verify_signed_command(s, c["owner"], "5b" * 32), name
        other = SignedCommand(s.account, s.nonce + 1, s.command, s.signature)
        assert not verify_signed_command(other, c["owner"], c["committee_key"]), name
        edited = SignedCommand(s.account, s.nonce, s.command + " ", s.signature)
        assert not verify_signed_command(edited, c["owner"], c["committee_key"]), name


def test_a_command_value_is_written_compactly_and_signs_like_its_text(signing: dict[str, Any]) -> None:
    c = case(signing, "withdraw-ed25519-committee")
    value = {"withdraw": {"account": 40, "asset": "USD", "amount": 250_000_000}}
    assert command_text(value) == c["command"]
    s = sign_command(c["secret_key"], c["committee_key"], 40, 3, value)
    assert s.signature.hex() == c["signature"]
    assert command_text({"a": [1, None, True, 'é"'], "b": 2**64 - 1}) == '{"a":[1,null,true,"é\\""],"b":18446744073709551615}'


def test_out_of_range_inputs_are_refused_not_signed() -> None:
    secret, _ = generate_owner_key()
    key = "5c" * 32
    for account, nonce in [(-1, 1), (2**64, 1), (1, 2**64)]:
        with pytest.raises(ValueError):
            signed_command_bytes(key, account, nonce, "{}")
    with pytest.raises(TypeError):
        signed_command_bytes(key, True, 1, "{}")
    for bad in ["", "00" * 65, "zz"]:
        with pytest.raises(ValueError):
            signed_command_bytes(bad, 1, 1, "{}")
    with pytest.raises(ValueError):
        signed_command_bytes(key, 1, 1, '"\ud800"')
    with pytest.raises(ValueError):
        sign_command(secret[:31], key, 1, 1, "{}")
    long = signed_command_bytes("ab" * 64, 1, 2, "{}")
    assert long[len(SIGNED_COMMAND_DOMAIN)] == 64
    assert len(long) == 23 + 1 + 64 + 16 + 2


def test_a_fresh_owner_key_signs_what_it_verifies() -> None:
    secret, public = generate_owner_key()
    assert owner_public_key(secret) == public
    s = sign_command(secret, "02" * 33, 7, 1, {"create_account": {"account": 7, "owner": public.hex()}})
    assert verify_signed_command(s, public, "02" * 33)
    assert not verify_signed_command(s, generate_owner_key()[1], "02" * 33)


class SigningApi(LocalServer):
    """Answers ``GET /v1/margin/signing`` and ``POST /v1/margin/signed``; records the posted bodies."""

    def __init__(self, committee_key: str, status: int | None = None) -> None:
        self.domain = SIGNED_COMMAND_DOMAIN.decode()
        self.answer = (200, "{}")
        self.posted: list[tuple[str | None, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def send(self, code: int, text: str) -> None:
                data = text.encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if status is not None:
                    self.send(status, '{"error":{"code":"busy","message":"wait"}}')
                elif self.path == "/v1/margin/signing":
                    self.send(200, json.dumps({"domain": api.domain, "committee_key": committee_key, "signed_bytes": "…"}))
                else:
                    self.send(404, '{"error":{"code":"no_route","message":"none"}}')

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length", "0"))
                api.posted.append((self.headers.get("content-type"), self.rfile.read(n).decode("utf-8")))
                if status is not None:
                    self.send(status, '{"error":{"code":"busy","message":"wait"}}')
                elif self.path == "/v1/margin/signed":
                    self.send(*api.answer)
                else:
                    self.send(404, '{"error":{"code":"no_route","message":"none"}}')

            def log_message(self, *_: Any) -> None:
                pass

        self.serve(Handler)


@pytest.fixture
def apis(signing: dict[str, Any]) -> Iterator[tuple[SigningApi, SigningApi]]:
    key = case(signing, "close-large-ids-text-as-sent")["committee_key"]
    down, up = SigningApi(key, status=503), SigningApi(key)
    yield down, up
    down.close()
    up.close()


def test_margin_signing_and_submit_signed(signing: dict[str, Any], apis: tuple[SigningApi, SigningApi]) -> None:
    down, up = apis
    c = case(signing, "close-large-ids-text-as-sent")
    with SibylClient([down.url, up.url], timeout=2) as client:
        params = client.margin_signing()
        assert params.committee_key.hex() == c["committee_key"]
        s = sign_command(c["secret_key"], params.committee_key, c["account"], c["nonce"], c["command"])
        up.answer = (200, '{"account":18446744073709551615,"events":[{"kind":"closed"}],"health":null}')
        r = client.submit_signed(s)
        assert (r.endpoint, r.status, r.account, r.events, r.health) == (up.url, 200, 2**64 - 1, [{"kind": "closed"}], None)
        # The exact envelope text, after the 5xx of the first endpoint.
        assert down.posted == [("application/json", c["envelope"])]
        assert up.posted == [("application/json", c["envelope"])]

        up.answer = (409, '{"error":{"code":"stale_nonce","message":"the current nonce is 9007199254740993"}}')
        with pytest.raises(SibylHttpError) as e:
            client.submit_signed(s)
        assert (e.value.status, e.value.code) == (409, "stale_nonce")
        up.answer = (401, '{"error":{"code":"bad_signature","message":"owner key"}}')
        with pytest.raises(SibylHttpError) as e:
            client.submit_signed(s)
        assert (e.value.status, e.value.code) == (401, "bad_signature")

        up.domain = "Sibyl margin command v3"
        with pytest.raises(SibylFormatError):
            client.margin_signing()
