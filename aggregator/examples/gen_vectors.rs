//! Writes `aggregator/vectors/report_vectors.json`, the report-format test
//! vectors shared by the Rust and Solidity tests. Everything is derived from
//! fixed seeds, so rerunning it reproduces the committed file byte for byte
//! (`aggregator/tests/vectors.rs` checks exactly that).
//!
//! `cargo run -p sibyl-aggregator --example gen_vectors`
//!
//! Field names are a contract with `contracts/` and are documented in
//! `docs/PROTOCOL.md`; add fields, don't rename them.

use frost_core::{Ciphersuite, Field, Group};
use k256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sibyl_aggregator::codec::Encode;
use sibyl_aggregator::digest::{
    COMMANDS_DOMAIN, MARGIN_STATE_DOMAIN, REPORT_DOMAIN, commands_root, header_digest,
    header_digest_preimage, margin_root, report_domain_separator,
};
use sibyl_aggregator::encoding::{encode_header, encode_leaf};
use sibyl_aggregator::merkle::{self, LEAF_PREFIX, MerkleTree, NODE_PREFIX};
use sibyl_aggregator::testkit::{DealerKeys, dealer_keys, threshold_sign};
use sibyl_aggregator::{
    ConfigDigest, FeedId, LeafStatus, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes,
    SignedReport, Suite, report::MarginCheckpoint, report::MarginCommand, report::flags,
};
use std::collections::{BTreeMap, BTreeSet};

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

/// Where the file lives, relative to the aggregator crate.
pub const VECTORS_PATH: &str = "vectors/report_vectors.json";

/// Seeds: one for each committee's trusted-dealer keygen, one for nonces.
const ED25519_KEY_SEED: u64 = 0x5179_6c00_0000_0001;
const EVM_KEY_SEED: u64 = 0x5179_6c00_0000_0002;
const NONCE_SEED: u64 = 0x5179_6c00_0000_0003;
const MEMBERS: u16 = 4;
const THRESHOLD: u16 = 3;
/// FROST identifiers of the members that sign (1-based, as in the committee file).
const SIGNERS: [u16; 3] = [1, 3, 4];

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Vectors {
    pub description: String,
    pub generator: String,
    pub version: u8,
    pub domain: Domain,
    pub committee: Committee,
    pub cases: Vec<Case>,
    pub invalid: Vec<InvalidCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Domain {
    pub report_domain: String,
    pub report_domain_hash: String,
    pub leaf_prefix: String,
    pub node_prefix: String,
    pub empty_root: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Committee {
    pub members: u16,
    pub threshold: u16,
    pub signers: Vec<u16>,
    pub ed25519: Ed25519Key,
    pub secp256k1_evm: EvmKey,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Ed25519Key {
    /// 32-byte compressed Edwards point.
    pub group_public_key: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct EvmKey {
    /// 33-byte SEC1 compressed point.
    pub group_public_key: String,
    pub public_key_x: String,
    pub public_key_y: String,
    /// `y mod 2` (0 even, 1 odd).
    pub public_key_parity: u8,
    /// `address(uint160(uint256(keccak256(x ‖ y))))`.
    pub public_key_address: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Header {
    pub version: u8,
    pub config_digest: String,
    /// Decimal string (u64).
    pub round: String,
    /// Decimal string (u64).
    pub timestamp_ms: String,
    pub merkle_root: String,
    /// `margin_root` of the report's margin commands and margin state: all
    /// zero for neither.
    pub margin_root: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Leaf {
    pub feed_id: String,
    pub feed_id_bytes32: String,
    /// Decimal string (int256 holding an i128).
    pub price: String,
    /// Decimal string (uint256 holding a u128).
    pub confidence: String,
    pub num_observations: u16,
    /// Decimal string (u64).
    pub observed_at_ms: String,
    /// Decimal string (int256 holding an i128); 0 = unknown.
    pub bid: String,
    /// Decimal string (int256 holding an i128); 0 = unknown.
    pub ask: String,
    pub venues: u16,
    /// 0 ok, 1 degraded, 2 stale, 3 halted, 4 market_closed.
    pub status: u8,
    pub flags: u16,
    /// Decimal string (int256 holding an i128).
    pub ema: String,
    /// Decimal string (uint256 holding a u128).
    pub ema_confidence: String,
    /// Decimal string (u64; 1e9 = 100 % a year).
    pub volatility: String,
}

impl Leaf {
    /// The leaf this vector describes (panics on a malformed vector: the
    /// file is generated and checked by the tests).
    pub fn to_leaf(&self) -> sibyl_aggregator::ReportLeaf {
        sibyl_aggregator::ReportLeaf {
            feed_id: sibyl_aggregator::FeedId::new(self.feed_id.clone()).expect("feed id"),
            price: self.price.parse().expect("i128"),
            confidence: self.confidence.parse().expect("u128"),
            num_observations: self.num_observations,
            observed_at_ms: self.observed_at_ms.parse().expect("u64"),
            bid: self.bid.parse().expect("i128"),
            ask: self.ask.parse().expect("i128"),
            venues: self.venues,
            status: sibyl_aggregator::LeafStatus::from_u8(self.status).expect("a status"),
            flags: self.flags,
            ema: self.ema.parse().expect("i128"),
            ema_confidence: self.ema_confidence.parse().expect("u128"),
            volatility: self.volatility.parse().expect("u64"),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct Proof {
    pub leaf_index: u32,
    pub leaf_count: u32,
    pub siblings: Vec<String>,
    /// Canonical wire encoding of the proof (`MerkleProof`).
    pub wire: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct Signatures {
    pub ed25519: Ed25519Sig,
    pub secp256k1_evm: EvmSig,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct Ed25519Sig {
    /// `R (32) ‖ z (32, little-endian)`.
    pub signature: String,
    pub r: String,
    pub z: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct EvmSig {
    /// `R (33, compressed) ‖ z (32, big-endian)`.
    pub signature: String,
    pub r: String,
    pub r_x: String,
    pub r_y: String,
    /// `address(uint160(uint256(keccak256(R_x ‖ R_y))))`.
    pub r_address: String,
    pub z: String,
    /// `c = H2(R compressed ‖ PK compressed ‖ digest)`, big-endian; the
    /// signature is valid iff `z·G − c·PK == R`.
    pub challenge: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    pub header: Header,
    pub leaves: Vec<Leaf>,
    pub leaf_abi: Vec<String>,
    pub leaf_hashes: Vec<String>,
    pub header_abi: String,
    pub merkle_root: String,
    pub proofs: Vec<Proof>,
    pub digest_preimage: String,
    pub digest: String,
    pub signatures: Signatures,
    /// Canonical wire encoding of the whole `SignedReport`.
    pub report_wire: String,
    /// The report's margin commands in report order (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<MarginCommand>,
    /// The bytes `header.margin_root` is the Keccak-256 of: the domain, then
    /// per command origin u16 ‖ nonce u64 ‖ body length u32 ‖ body
    /// (big-endian; absent when there are no commands and the root is zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands_preimage: Option<String>,
    /// The margin state root the report carries, in its serde form
    /// (`{round, root}`, root hex without `0x`; absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_state: Option<MarginCheckpoint>,
    /// With a margin state, the bytes `header.margin_root` is the Keccak-256
    /// of: the domain ‖ commands root ‖ round u64 (big-endian) ‖ state root
    /// (absent without a margin state: the root is then the commands root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_state_preimage: Option<String>,
}

/// One feed with a signed header that a verifier must reject.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct InvalidCase {
    pub name: String,
    pub expected: String,
    /// What is wrong, in words.
    pub reason: String,
    /// Rust `VerifyError` variant that `verify_leaf` returns.
    pub error: String,
    pub header: Header,
    pub header_abi: String,
    pub digest: String,
    pub leaf: Leaf,
    pub leaf_abi: String,
    pub leaf_hash: String,
    pub proof: Proof,
    pub signatures: Signatures,
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn header_json(hd: &ReportHeader) -> Header {
    Header {
        version: hd.version,
        config_digest: h(hd.config_digest.0),
        round: hd.round.to_string(),
        timestamp_ms: hd.timestamp_ms.to_string(),
        merkle_root: h(hd.merkle_root),
        margin_root: h(hd.margin_root),
    }
}

fn leaf_json(l: &ReportLeaf) -> Leaf {
    Leaf {
        feed_id: l.feed_id.to_string(),
        feed_id_bytes32: h(l.feed_id.to_bytes32()),
        price: l.price.to_string(),
        confidence: l.confidence.to_string(),
        num_observations: l.num_observations,
        observed_at_ms: l.observed_at_ms.to_string(),
        bid: l.bid.to_string(),
        ask: l.ask.to_string(),
        venues: l.venues,
        status: l.status.as_u8(),
        flags: l.flags,
        ema: l.ema.to_string(),
        ema_confidence: l.ema_confidence.to_string(),
        volatility: l.volatility.to_string(),
    }
}

fn proof_json(p: &merkle::MerkleProof) -> Proof {
    Proof {
        leaf_index: p.leaf_index,
        leaf_count: p.leaf_count,
        siblings: p.siblings.iter().map(h).collect(),
        wire: h(p.to_bytes()),
    }
}

fn eth_address(x: &[u8], y: &[u8]) -> String {
    use sha3::{Digest, Keccak256};
    let mut k = Keccak256::new();
    k.update(x);
    k.update(y);
    h(&k.finalize()[12..])
}

/// Uncompressed affine coordinates of a 33-byte compressed secp256k1 point.
fn xy(compressed: &[u8]) -> ([u8; 32], [u8; 32]) {
    let ep = k256::EncodedPoint::from_bytes(compressed).expect("valid SEC1 encoding");
    let p = Option::<k256::AffinePoint>::from(k256::AffinePoint::from_encoded_point(&ep))
        .expect("point on the curve");
    let u = p.to_encoded_point(false);
    let mut x = [0u8; 32];
    let mut y = [0u8; 32];
    x.copy_from_slice(u.x().expect("not identity"));
    y.copy_from_slice(u.y().expect("uncompressed"));
    (x, y)
}

/// frost-secp256k1-evm's challenge over a serialized signature's R.
pub fn evm_challenge(sig: &[u8], group_key: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    let mut pre = Vec::with_capacity(33 + 33 + 32);
    pre.extend_from_slice(&sig[..33]);
    pre.extend_from_slice(group_key);
    pre.extend_from_slice(digest);
    let c = <Evm as Ciphersuite>::H2(&pre);
    <<<Evm as Ciphersuite>::Group as Group>::Field as Field>::serialize(&c)
}

struct Signer {
    ed: DealerKeys<Ed>,
    evm: DealerKeys<Evm>,
    nonce_rng: ChaCha20Rng,
}

impl Signer {
    fn new() -> Self {
        let ed = dealer_keys::<Ed, _>(
            MEMBERS,
            THRESHOLD,
            &mut ChaCha20Rng::seed_from_u64(ED25519_KEY_SEED),
        )
        .expect("valid committee");
        let evm = dealer_keys::<Evm, _>(
            MEMBERS,
            THRESHOLD,
            &mut ChaCha20Rng::seed_from_u64(EVM_KEY_SEED),
        )
        .expect("valid committee");
        Self {
            ed,
            evm,
            nonce_rng: ChaCha20Rng::seed_from_u64(NONCE_SEED),
        }
    }

    fn evm_key(&self) -> Vec<u8> {
        self.evm
            .public_key_package
            .verifying_key()
            .serialize()
            .expect("valid key")
    }

    fn sign(&mut self, digest: &[u8; 32]) -> (BTreeMap<Suite, SignatureBytes>, Signatures) {
        let ed_ids: BTreeSet<_> = SIGNERS
            .iter()
            .map(|&i| frost_core::Identifier::<Ed>::try_from(i).expect("nonzero"))
            .collect();
        let evm_ids: BTreeSet<_> = SIGNERS
            .iter()
            .map(|&i| frost_core::Identifier::<Evm>::try_from(i).expect("nonzero"))
            .collect();
        let ed = threshold_sign(&self.ed, &ed_ids, digest, &mut self.nonce_rng)
            .and_then(|s| s.serialize())
            .expect("honest signing");
        let evm = threshold_sign(&self.evm, &evm_ids, digest, &mut self.nonce_rng)
            .and_then(|s| s.serialize())
            .expect("honest signing");
        let map = [
            (Suite::Ed25519, SignatureBytes(ed.clone())),
            (Suite::Secp256k1Evm, SignatureBytes(evm.clone())),
        ]
        .into_iter()
        .collect();
        let json = self.signatures_json(&ed, &evm, digest);
        (map, json)
    }

    fn signatures_json(&self, ed: &[u8], evm: &[u8], digest: &[u8; 32]) -> Signatures {
        let (rx, ry) = xy(&evm[..33]);
        Signatures {
            ed25519: Ed25519Sig {
                signature: h(ed),
                r: h(&ed[..32]),
                z: h(&ed[32..]),
            },
            secp256k1_evm: EvmSig {
                signature: h(evm),
                r: h(&evm[..33]),
                r_x: h(rx),
                r_y: h(ry),
                r_address: eth_address(&rx, &ry),
                z: h(&evm[33..]),
                challenge: h(evm_challenge(evm, &self.evm_key(), digest)),
            },
        }
    }
}

/// A leaf with a bid/ask around the price, an EMA a little below it and a 45 %
/// volatility; cases override the quality fields where they test them.
fn leaf(id: &str, price: i128, confidence: u128, n: u16, at: u64) -> ReportLeaf {
    ReportLeaf {
        bid: price.saturating_sub(1_000),
        ask: price.saturating_add(1_000),
        venues: n.saturating_add(2),
        ema: price.saturating_sub(500),
        volatility: 450_000_000,
        ..ReportLeaf::basic(
            FeedId::new(id).expect("valid feed id"),
            price,
            confidence,
            n,
            at,
        )
    }
}

/// `l` with a status and flags.
fn flagged(mut l: ReportLeaf, status: LeafStatus, flags: u16) -> ReportLeaf {
    l.status = status;
    l.flags = flags;
    l
}

fn header(config_digest: ConfigDigest, round: u64, ts: u64, leaves: &[ReportLeaf]) -> ReportHeader {
    ReportHeader {
        version: PROTOCOL_VERSION,
        config_digest,
        round,
        timestamp_ms: ts,
        merkle_root: merkle::root(leaves),
        margin_root: [0; 32],
    }
}

fn command(origin: u16, nonce: u64, body: &str) -> MarginCommand {
    MarginCommand {
        origin,
        nonce,
        body: body.to_owned(),
    }
}

/// `commands_root`'s preimage, written out field by field (docs/PROTOCOL.md,
/// "Margin root"); `None` for no commands (the root is then zero, no hash).
fn commands_preimage(commands: &[MarginCommand]) -> Option<Vec<u8>> {
    if commands.is_empty() {
        return None;
    }
    let mut out = COMMANDS_DOMAIN.to_vec();
    for c in commands {
        out.extend_from_slice(&c.origin.to_be_bytes());
        out.extend_from_slice(&c.nonce.to_be_bytes());
        out.extend_from_slice(
            &u32::try_from(c.body.len())
                .expect("short body")
                .to_be_bytes(),
        );
        out.extend_from_slice(c.body.as_bytes());
    }
    Some(out)
}

/// `margin_root`'s preimage with a state root, written out field by field
/// (docs/PROTOCOL.md, "Margin root"); `None` without one (the margin root is
/// then the commands root itself).
fn margin_state_preimage(
    commands: &[MarginCommand],
    state: Option<&MarginCheckpoint>,
) -> Option<Vec<u8>> {
    let state = state?;
    let mut out = MARGIN_STATE_DOMAIN.to_vec();
    out.extend_from_slice(&commands_root(commands));
    out.extend_from_slice(&state.round.to_be_bytes());
    out.extend_from_slice(&state.root);
    Some(out)
}

/// A valid case's inputs: name, header, leaves, margin commands, margin state.
type Inputs = (
    &'static str,
    ReportHeader,
    Vec<ReportLeaf>,
    Vec<MarginCommand>,
    Option<MarginCheckpoint>,
);

const CONFIG: ConfigDigest = ConfigDigest([
    0x3c, 0x1a, 0x7e, 0x52, 0x9b, 0x04, 0xd8, 0x61, 0x2f, 0xe3, 0x90, 0x47, 0xbb, 0x15, 0x6a, 0xc2,
    0x08, 0x7d, 0xf1, 0x33, 0x9e, 0x4c, 0xa5, 0x26, 0x71, 0xdb, 0x0e, 0x88, 0x5f, 0xb4, 0x19, 0xe7,
]);

/// The report inputs of each valid case.
fn valid_inputs() -> Vec<Inputs> {
    let ts = 1_760_000_000_000u64;
    let one = vec![leaf(
        "BTC-USD",
        6_512_345_678_901_234,
        1_250_000_000,
        7,
        ts - 420,
    )];
    let three = vec![
        leaf("BTC-USD", 6_512_345_678_901_234, 1_250_000_000, 7, ts - 420),
        leaf("ETH-USD", 251_234_500_000, 95_000_000, 6, ts - 380),
        // Negative prices happen (spreads, funding rates, some power markets).
        flagged(
            leaf("WTI-SPREAD", -1_234_567, 8_000, 5, ts - 900),
            LeafStatus::Degraded,
            flags::FEW_VENUES | flags::UNCONFIRMED_JUMP,
        ),
    ];
    let extremes = vec![
        ReportLeaf {
            bid: i128::MIN,
            ask: i128::MAX,
            venues: u16::MAX,
            status: LeafStatus::MarketClosed,
            flags: flags::ALL,
            ema: i128::MIN,
            ema_confidence: u128::MAX,
            volatility: u64::MAX,
            ..leaf("A", i128::MIN, u128::MAX, u16::MAX, u64::MAX)
        },
        ReportLeaf {
            bid: 0,
            ask: 0,
            venues: 0,
            ema: i128::MAX,
            ema_confidence: 0,
            volatility: 0,
            ..leaf("B", i128::MAX, 0, 0, 0)
        },
        leaf("C", -1, 1, 1, 1),
        leaf("C.X", 0, 0, 3, ts),
        leaf("ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", 1, 2, 3, 4),
    ];
    let many: Vec<ReportLeaf> = sibyl_aggregator::testkit::sample_leaves(12);
    let two = vec![
        leaf("ETH-USD", 251_634_500_000, 92_000_000, 6, ts + 2_620),
        leaf("SOL-USD", 18_234_560_000, 4_100_000, 5, ts + 2_580),
    ];
    // Two margin commands, ascending by (origin, nonce) as the leader orders them;
    // the bodies are the margin engine's JSON commands (opaque to the protocol).
    let commands = vec![
        command(1, 4, r#"{"create_account":{"account":7}}"#),
        command(
            3,
            1,
            r#"{"deposit":{"account":7,"asset":"USD","amount":250000000000}}"#,
        ),
    ];
    let mut margin = header(CONFIG, 1_000_004, ts + 3_000, &two);
    margin.margin_root = margin_root(&commands, None);
    // The next round: two more commands, and the margin engine's state root
    // after the round before (which every signer computed and attested). The
    // root is a fixed stand-in: the protocol does not look inside it.
    let next = vec![
        leaf("ETH-USD", 251_701_200_000, 91_000_000, 6, ts + 3_610),
        leaf("SOL-USD", 18_240_010_000, 4_050_000, 5, ts + 3_590),
    ];
    let next_commands = vec![
        command(
            2,
            6,
            r#"{"withdraw":{"account":7,"asset":"USD","amount":1000000000}}"#,
        ),
        command(3, 2, r#"{"create_account":{"account":8}}"#),
    ];
    let state = MarginCheckpoint {
        round: 1_000_004,
        root: {
            use sha3::{Digest, Keccak256};
            Keccak256::digest(b"Sibyl vectors: margin state after round 1000004").into()
        },
    };
    let mut with_state = header(CONFIG, 1_000_005, ts + 4_000, &next);
    with_state.margin_root = margin_root(&next_commands, Some(&state));
    vec![
        (
            "single-feed",
            header(CONFIG, 1, ts, &one),
            one,
            vec![],
            None,
        ),
        (
            "three-feeds-odd-promotion",
            header(CONFIG, 2, ts + 1_000, &three),
            three,
            vec![],
            None,
        ),
        (
            "extreme-values",
            header(CONFIG, u64::MAX, u64::MAX, &extremes),
            extremes,
            vec![],
            None,
        ),
        (
            "twelve-feeds",
            header(CONFIG, 1_000_003, ts + 2_000, &many),
            many,
            vec![],
            None,
        ),
        ("margin-commands", margin, two, commands, None),
        (
            "margin-commands-and-state",
            with_state,
            next,
            next_commands,
            Some(state),
        ),
    ]
}

/// Builds the whole vector file in memory.
pub fn build() -> Vectors {
    let mut signer = Signer::new();
    let evm_key = signer.evm_key();
    let (pkx, pky) = xy(&evm_key);
    let committee = Committee {
        members: MEMBERS,
        threshold: THRESHOLD,
        signers: SIGNERS.to_vec(),
        ed25519: Ed25519Key {
            group_public_key: h(signer
                .ed
                .public_key_package
                .verifying_key()
                .serialize()
                .expect("valid key")),
        },
        secp256k1_evm: EvmKey {
            group_public_key: h(&evm_key),
            public_key_x: h(pkx),
            public_key_y: h(pky),
            public_key_parity: pky[31] & 1,
            public_key_address: eth_address(&pkx, &pky),
        },
    };

    let mut cases = Vec::new();
    let mut reports = Vec::new();
    for (name, hd, leaves, commands, margin_state) in valid_inputs() {
        let digest = header_digest(&hd);
        let (sig_map, sigs) = signer.sign(&digest);
        let tree = MerkleTree::new(&leaves);
        let report = SignedReport {
            header: hd.clone(),
            leaves: leaves.clone(),
            signatures: sig_map,
            commands: commands.clone(),
            margin_state,
        };
        cases.push(Case {
            name: name.to_owned(),
            header: header_json(&hd),
            leaves: leaves.iter().map(leaf_json).collect(),
            leaf_abi: leaves.iter().map(|l| h(encode_leaf(l))).collect(),
            leaf_hashes: leaves.iter().map(|l| h(merkle::leaf_hash(l))).collect(),
            header_abi: h(encode_header(&hd)),
            merkle_root: h(tree.root()),
            proofs: (0..leaves.len())
                .map(|i| proof_json(&tree.proof(i).expect("index in range")))
                .collect(),
            digest_preimage: h(header_digest_preimage(&hd)),
            digest: h(digest),
            signatures: sigs,
            report_wire: h(report.to_bytes()),
            commands_preimage: commands_preimage(&commands).map(h),
            margin_state_preimage: margin_state_preimage(&commands, margin_state.as_ref()).map(h),
            commands,
            margin_state,
        });
        reports.push(report);
    }

    let invalid = invalid_cases(&mut signer, &reports[1]);
    Vectors {
        description: "Sibyl report format test vectors: ABI encodings, Merkle tree, margin root (commands and state), signed digest and FROST signatures (docs/PROTOCOL.md)".into(),
        generator: "cargo run -p sibyl-aggregator --example gen_vectors".into(),
        version: PROTOCOL_VERSION,
        domain: Domain {
            report_domain: String::from_utf8_lossy(REPORT_DOMAIN).into_owned(),
            report_domain_hash: h(report_domain_separator()),
            leaf_prefix: h([LEAF_PREFIX]),
            node_prefix: h([NODE_PREFIX]),
            empty_root: h([0u8; 32]),
        },
        committee,
        cases,
        invalid,
    }
}

/// Tampered variants of `base` (which has at least 3 leaves). Each case's
/// `challenge` is computed over that case's own digest, as a verifier would.
fn invalid_cases(signer: &mut Signer, base: &SignedReport) -> Vec<InvalidCase> {
    let proof = |i: usize| merkle::proof(&base.leaves, i).expect("index in range");
    let base_ed = base.signatures[&Suite::Ed25519].0.clone();
    let base_evm = base.signatures[&Suite::Secp256k1Evm].0.clone();
    let mut out = Vec::new();
    let mut push = |signer: &Signer,
                    name: &str,
                    reason: &str,
                    error: &str,
                    hd: &ReportHeader,
                    l: &ReportLeaf,
                    p: &merkle::MerkleProof,
                    (ed, evm): (&[u8], &[u8])| {
        out.push(InvalidCase {
            name: name.into(),
            expected: "invalid".into(),
            reason: reason.into(),
            error: error.into(),
            header: header_json(hd),
            header_abi: h(encode_header(hd)),
            digest: h(header_digest(hd)),
            leaf: leaf_json(l),
            leaf_abi: h(encode_leaf(l)),
            leaf_hash: h(merkle::leaf_hash(l)),
            proof: proof_json(p),
            signatures: signer.signatures_json(ed, evm, &header_digest(hd)),
        });
    };
    let orig = (base_ed.as_slice(), base_evm.as_slice());

    let mut l = base.leaves[0].clone();
    l.price += 1;
    push(
        signer,
        "tampered-price",
        "leaf price changed by one unit; proof and signatures are the originals",
        "BadProof",
        &base.header,
        &l,
        &proof(0),
        orig,
    );

    let mut l = base.leaves[2].clone();
    l.status = LeafStatus::Ok;
    l.flags = 0;
    push(
        signer,
        "tampered-status",
        "a degraded leaf's status and flags rewritten to ok; proof and signatures are the originals",
        "BadProof",
        &base.header,
        &l,
        &proof(2),
        orig,
    );

    let mut l = base.leaves[0].clone();
    l.ema += 1;
    push(
        signer,
        "tampered-ema",
        "leaf ema changed by one unit; proof and signatures are the originals",
        "BadProof",
        &base.header,
        &l,
        &proof(0),
        orig,
    );

    let mut l = base.leaves[1].clone();
    l.observed_at_ms += 1;
    push(
        signer,
        "tampered-observed-at",
        "leaf observedAtMs changed by one; proof and signatures are the originals",
        "BadProof",
        &base.header,
        &l,
        &proof(1),
        orig,
    );

    push(
        signer,
        "proof-of-other-leaf",
        "leaf 0 presented with leaf 1's proof",
        "BadProof",
        &base.header,
        &base.leaves[0],
        &proof(1),
        orig,
    );

    let mut hd = base.header.clone();
    hd.round += 1;
    push(
        signer,
        "tampered-round",
        "header round changed; signatures are over the original header",
        "BadSignature",
        &hd,
        &base.leaves[0],
        &proof(0),
        orig,
    );

    let mut hd = base.header.clone();
    hd.timestamp_ms -= 1;
    push(
        signer,
        "tampered-timestamp",
        "header timestampMs changed; signatures are over the original header",
        "BadSignature",
        &hd,
        &base.leaves[2],
        &proof(2),
        orig,
    );

    let mut hd = base.header.clone();
    hd.margin_root[31] ^= 0x01;
    push(
        signer,
        "tampered-margin-root",
        "header marginRoot changed (the report orders no commands, so it is zero); signatures are over the original header",
        "BadSignature",
        &hd,
        &base.leaves[1],
        &proof(1),
        orig,
    );

    // Lowest bit of z: first byte for Ed25519 (little-endian), last for secp256k1 (big-endian).
    let mut ed = base_ed.clone();
    ed[32] ^= 0x01;
    let mut evm = base_evm.clone();
    evm[64] ^= 0x01;
    push(
        signer,
        "tampered-signature-z",
        "lowest bit of z flipped in both signatures",
        "BadSignature",
        &base.header,
        &base.leaves[0],
        &proof(0),
        (&ed, &evm),
    );

    // Properly signed by the committee, but not a report a consumer may accept.
    let mut hd = base.header.clone();
    hd.config_digest.0[0] ^= 0xff;
    let (sigs, _) = signer.sign(&header_digest(&hd));
    push(
        signer,
        "wrong-config-digest",
        "validly signed, but for another committee configuration",
        "WrongConfigDigest",
        &hd,
        &base.leaves[0],
        &proof(0),
        (&sigs[&Suite::Ed25519].0, &sigs[&Suite::Secp256k1Evm].0),
    );

    let mut hd = base.header.clone();
    hd.version = PROTOCOL_VERSION + 1;
    let (sigs, _) = signer.sign(&header_digest(&hd));
    push(
        signer,
        "wrong-version",
        "validly signed, but with an unsupported header version",
        "WrongVersion",
        &hd,
        &base.leaves[0],
        &proof(0),
        (&sigs[&Suite::Ed25519].0, &sigs[&Suite::Secp256k1Evm].0),
    );
    out
}

/// The file's exact text: pretty JSON with a trailing newline.
pub fn render(v: &Vectors) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serializable");
    s.push('\n');
    s
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, render(&build()))?;
    println!("wrote {}", path.display());
    Ok(())
}
