"""Sibyl client SDK: read feeds, history and signed reports from one or more
API endpoints and verify them locally (FROST Ed25519 and secp256k1-evm)."""

from .client import Candle, FeedValue, Latest, SibylClient, SibylHttpError
from .encoding import commands_root, encode_header, encode_leaf, header_digest, leaf_hash, merkle_root, verify_proof
from .types import (
    MarginCommand,
    MerkleProof,
    ReportHeader,
    ReportLeaf,
    SibylFormatError,
    SignedReport,
    command_from_json,
    header_from_json,
    leaf_from_json,
    proof_from_json,
    report_from_json,
    signatures_from_json,
)
from .verify import GroupKeys, VerifiedReport, VerifyError, secp256k1_evm_challenge, verify_leaf, verify_report

__all__ = [
    "Candle",
    "FeedValue",
    "GroupKeys",
    "Latest",
    "MarginCommand",
    "MerkleProof",
    "ReportHeader",
    "ReportLeaf",
    "SibylClient",
    "SibylFormatError",
    "SibylHttpError",
    "SignedReport",
    "VerifiedReport",
    "VerifyError",
    "command_from_json",
    "commands_root",
    "encode_header",
    "encode_leaf",
    "header_digest",
    "header_from_json",
    "leaf_from_json",
    "leaf_hash",
    "merkle_root",
    "proof_from_json",
    "report_from_json",
    "secp256k1_evm_challenge",
    "signatures_from_json",
    "verify_leaf",
    "verify_proof",
    "verify_report",
]
