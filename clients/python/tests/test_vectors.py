"""The shared client vectors (from the Rust reference): every report and leaf
case verifies, or fails with the same error, as in Rust."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from sibyl_client import (
    GroupKeys,
    MarginCheckpoint,
    MarginCommand,
    commands_root,
    margin_root,
    VerifyError,
    encode_header,
    encode_leaf,
    header_digest,
    header_from_json,
    leaf_from_json,
    leaf_hash,
    proof_from_json,
    report_from_json,
    secp256k1_evm_challenge,
    signatures_from_json,
    verify_leaf,
    verify_report,
)

from sibyl_client.encoding import keccak256

from .conftest import REPO


def keys_of(vectors: dict[str, Any], name: str) -> GroupKeys:
    k = vectors["keys"][name]
    return GroupKeys.from_hex(k["config_digest"], k.get("ed25519"), k.get("secp256k1-evm"))


def outcome(f: Callable[[], object]) -> str:
    try:
        f()
    except VerifyError as e:
        return e.code
    return "valid"


def test_every_report_case_verifies_or_fails_as_in_rust(vectors: dict[str, Any]) -> None:
    seen = set()
    assert len(vectors["reports"]) >= 15
    for c in vectors["reports"]:
        report = report_from_json(c["report"])
        assert header_digest(report.header).hex() == c["digest"], c["name"]
        assert encode_header(report.header).hex() == c["header_abi"], c["name"]
        keys = keys_of(vectors, c["keys"])
        got = outcome(lambda: verify_report(report, keys))
        assert got == ("valid" if c["expected"] == "valid" else c["error"]), c["name"]
        if got == "valid":
            assert verify_report(report, keys).suites == c["suites"], c["name"]
        seen.add(got)
    for e in ("valid", "RootMismatch", "CommandsMismatch", "BadSignature", "WrongConfigDigest", "WrongVersion",
              "MissingSignature", "MalformedSignature", "LeavesNotSorted", "NoGroupKeys"):
        assert e in seen, f"no case ends in {e}"


def test_every_leaf_case_verifies_or_fails_as_in_rust(vectors: dict[str, Any]) -> None:
    valid = 0
    for c in vectors["leaves"]:
        header = header_from_json(c["header"])
        leaf = leaf_from_json(c["leaf"])
        proof = proof_from_json(c["proof"])
        assert encode_leaf(leaf).hex() == c["leaf_abi"], c["name"]
        assert leaf_hash(leaf).hex() == c["leaf_hash"], c["name"]
        keys = keys_of(vectors, c["keys"])
        sigs = signatures_from_json(c["signatures"])
        got = outcome(lambda: verify_leaf(header, leaf, proof, sigs, keys))
        assert got == ("valid" if c["expected"] == "valid" else c["error"]), c["name"]
        if got == "valid":
            valid += 1
            assert verify_leaf(header, leaf, proof, sigs, keys).hex() == c["digest"]
    assert valid == 25


def test_margin_roots_match_the_report_vectors() -> None:
    rv = json.loads((REPO / "aggregator" / "vectors" / "report_vectors.json").read_text())
    with_commands = 0
    with_state = 0
    for c in rv["cases"]:
        j = {"header": c["header"], "leaves": [], "signatures": {}, "commands": c.get("commands", [])}
        if "margin_state" in c:
            j["margin_state"] = c["margin_state"]
        r = report_from_json(j)
        header = c["header"]["margin_root"]
        assert "0x" + margin_root(r.commands, r.margin_state).hex() == header, c["name"]
        assert r.header.margin_root.hex() == header[2:]
        commands = commands_root(r.commands)
        if "commands_preimage" in c:
            with_commands += 1
            assert keccak256(bytes.fromhex(c["commands_preimage"][2:])) == commands, c["name"]
        if r.margin_state is None:
            assert "margin_state_preimage" not in c, c["name"]
            assert "0x" + commands.hex() == header, c["name"]
        else:
            with_state += 1
            # "Sibyl margin state v1" ‖ commands root ‖ u64 round ‖ state root, by hand.
            pre = b"Sibyl margin state v1" + commands + r.margin_state.round.to_bytes(8, "big") + r.margin_state.root
            assert "0x" + pre.hex() == c["margin_state_preimage"], c["name"]
            assert "0x" + keccak256(pre).hex() == header, c["name"]
            assert "0x" + commands.hex() != header, c["name"]
    assert with_commands >= 1
    assert with_state >= 1
    # A body is hashed as its UTF-8 bytes, its length in bytes.
    one = commands_root([MarginCommand(1, 2, "é")])
    assert one == keccak256(b"Sibyl margin commands v1" + bytes.fromhex("0001000000000000000200000002c3a9"))
    assert commands_root([]) == bytes(32)
    assert margin_root([]) == bytes(32)
    # With a state, even a round without commands has a non-zero margin root.
    state = MarginCheckpoint(7, b"\xab" * 32)
    assert margin_root([], state) == keccak256(
        b"Sibyl margin state v1" + bytes(32) + (7).to_bytes(8, "big") + b"\xab" * 32
    )


def test_a_report_reads_its_margin_state_absent_as_none(vectors: dict[str, Any]) -> None:
    c = next(x for x in vectors["reports"] if x["name"] == "margin-commands-and-state")
    r = report_from_json(c["report"])
    assert r.margin_state is not None
    assert r.margin_state.round == c["report"]["margin_state"]["round"]
    assert r.margin_state.root.hex() == c["report"]["margin_state"]["root"]
    plain = next(x for x in vectors["reports"] if x["name"] == "margin-commands")
    assert report_from_json(plain["report"]).margin_state is None
    # A consumer that drops the state gets CommandsMismatch, not a pass.
    dropped = dataclasses.replace(r, margin_state=None)
    assert outcome(lambda: verify_report(dropped, keys_of(vectors, "committee"))) == "CommandsMismatch"


def test_extreme_values_are_exact(vectors: dict[str, Any]) -> None:
    c = next(x for x in vectors["reports"] if x["name"] == "extreme-values")
    r = report_from_json(c["report"])
    assert r.leaves[0].price == -(2**127)
    assert r.leaves[0].confidence == 2**128 - 1
    assert r.header.round == 2**64 - 1
    assert r.leaves[0].flag_names[-1] == "market_closed"


def test_challenge_matches_the_report_vectors() -> None:
    rv = json.loads((REPO / "aggregator" / "vectors" / "report_vectors.json").read_text())
    key = bytes.fromhex(rv["committee"]["secp256k1_evm"]["group_public_key"][2:])
    for c in rv["cases"]:
        s = c["signatures"]["secp256k1_evm"]
        got = secp256k1_evm_challenge(bytes.fromhex(s["r"][2:]), key, bytes.fromhex(c["digest"][2:]))
        assert got == int(s["challenge"], 16), c["name"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"config_digest": "00" * 31, "ed25519": "00" * 32},
        {"config_digest": "00" * 32, "secp256k1_evm": "02" + "ff" * 32},
        {"config_digest": "00" * 32, "ed25519": "01" + "00" * 31},  # the identity: small order
    ],
)
def test_bad_group_keys_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(VerifyError) as e:
        GroupKeys.from_hex(**kwargs)
    assert e.value.code == "BadGroupKey"


def test_an_ed25519_r_outside_the_prime_order_subgroup_is_malformed(vectors: dict[str, Any]) -> None:
    torsion = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")  # order 8
    with pytest.raises(VerifyError) as e:
        GroupKeys.from_hex("00" * 32, ed25519=torsion.hex())
    assert e.value.code == "BadGroupKey"
    c = vectors["leaves"][0]
    sig = signatures_from_json(c["signatures"])["ed25519"]
    got = outcome(
        lambda: verify_leaf(
            header_from_json(c["header"]),
            leaf_from_json(c["leaf"]),
            proof_from_json(c["proof"]),
            {"ed25519": torsion + sig[32:]},
            keys_of(vectors, "ed25519-only"),
        )
    )
    assert got == "MalformedSignature"
