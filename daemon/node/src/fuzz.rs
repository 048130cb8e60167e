//! Fuzz entry points for the daemon's decoders: the transport envelope (with
//! its commitment hints and catch-up requests and replies), the DKG wire
//! messages, node.toml and the committee file.
//!
//! Each takes arbitrary bytes and must never panic on its own account: a
//! decoder either rejects the input with its typed error or accepts it, and
//! then re-encoding must give back the input (one encoding per value, where
//! the format promises one). The `assert!`s are the fuzz oracle. They are
//! called by the cargo-fuzz targets in `daemon/fuzz/` and by the tests below;
//! the decoders of the protocol core are fuzzed through
//! `sibyl_aggregator::fuzz`.

use crate::config::{Committee, ConfigError, NodeConfig};
use crate::dkg::DkgMessage;
use crate::driver::transport::Envelope;
use frost_core::keys::dkg::{round1, round2};
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_evm::Secp256K1Keccak256;
use std::path::Path;

/// Envelope tags (as in `node::transport`): the catch-up target picks one
/// of these two with the input's first byte.
const TAG_CATCHUP_REQUEST: u8 = 5;
const TAG_CATCHUP_REPLY: u8 = 6;

/// Any point-to-point payload: `Envelope::decode`, and re-encoding what
/// decoded gives back the input byte for byte.
pub fn fuzz_envelope(data: &[u8]) {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data, "non-canonical envelope accepted: {e:?}");
    }
}

/// A commitments hint as a member receives it: the input is one suite's
/// commitment of the hint (`Node::warm_commitments` parses each of them),
/// sent in an envelope; what arrives is parsed with the fast Ed25519 parse
/// checked against frost's (`sibyl_aggregator::fuzz::fuzz_commitments`).
pub fn fuzz_commitment_hint(data: &[u8]) {
    let wire = Envelope::Commitments(data.to_vec()).encode();
    match Envelope::decode(&wire) {
        Ok(Envelope::Commitments(bytes)) => {
            assert_eq!(bytes, data, "the hint changed on the way");
            sibyl_aggregator::fuzz::fuzz_commitments(&bytes);
        }
        Ok(other) => panic!("a commitments hint decoded as {other:?}"),
        // Only a hint longer than any commitment is refused.
        Err(_) => assert!(data.len() > 256, "a {}-byte hint refused", data.len()),
    }
}

/// Catch-up requests and replies: the first input byte picks which (odd:
/// reply), the rest is the envelope's body. What decodes must re-encode to
/// the same bytes; each report of a reply is then decoded and verified as the
/// node does (`sibyl_aggregator::fuzz::fuzz_verified_report`: only the
/// committee's own report may verify).
pub fn fuzz_catchup(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let tag = if pick & 1 == 1 {
        TAG_CATCHUP_REPLY
    } else {
        TAG_CATCHUP_REQUEST
    };
    let mut wire = Vec::with_capacity(data.len());
    wire.push(tag);
    wire.extend_from_slice(body);
    match Envelope::decode(&wire) {
        Ok(e @ Envelope::CatchupRequest { .. }) => assert_eq!(e.encode(), wire),
        Ok(e @ Envelope::CatchupReply { .. }) => {
            assert_eq!(e.encode(), wire, "non-canonical catch-up reply accepted");
            if let Envelope::CatchupReply { reports, .. } = e {
                assert!(reports.len() <= usize::from(crate::driver::transport::CATCHUP_PAGE));
                for r in &reports {
                    sibyl_aggregator::fuzz::fuzz_verified_report(r);
                }
            }
        }
        Ok(other) => panic!("tag {tag} decoded as {other:?}"),
        Err(_) => {}
    }
}

/// DKG wire messages (`DkgMessage::decode`), then the FROST packages they
/// carry as the ceremony parses them, for both suites. A decoded message
/// re-encodes to the same value and length, and to the same bytes except an
/// echo, whose entries may arrive in any order (they are compared as a map).
pub fn fuzz_dkg_message(data: &[u8]) {
    let Ok((session, msg)) = DkgMessage::decode(data) else {
        return;
    };
    let again = msg.encode(&session);
    assert_eq!(
        again.len(),
        data.len(),
        "DKG message re-encodes to another length"
    );
    assert_eq!(
        DkgMessage::decode(&again).ok().as_ref(),
        Some(&(session, msg.clone())),
        "DKG message does not round-trip"
    );
    if !matches!(msg, DkgMessage::Echo { .. }) {
        assert_eq!(again, data, "non-canonical DKG message accepted");
    }
    match &msg {
        DkgMessage::Round1 { package, .. } => {
            round1_package::<Ed25519Sha512>(package);
            round1_package::<Secp256K1Keccak256>(package);
        }
        DkgMessage::Round2 { package, .. } | DkgMessage::Complaint { package, .. } => {
            round2_package::<Ed25519Sha512>(package);
            round2_package::<Secp256K1Keccak256>(package);
        }
        DkgMessage::Nonce { .. } | DkgMessage::Echo { .. } | DkgMessage::Done { .. } => {}
    }
}

fn round1_package<C: frost_core::Ciphersuite>(bytes: &[u8]) {
    if let Ok(p) = round1::Package::<C>::deserialize(bytes) {
        let again = p.serialize().expect("a parsed round-1 package serializes");
        assert_eq!(round1::Package::<C>::deserialize(&again).ok(), Some(p));
    }
}

fn round2_package<C: frost_core::Ciphersuite>(bytes: &[u8]) {
    if let Ok(p) = round2::Package::<C>::deserialize(bytes) {
        let again = p.serialize().expect("a parsed round-2 package serializes");
        assert_eq!(round2::Package::<C>::deserialize(&again).ok(), Some(p));
    }
}

/// The committee file as `sibyl config check` reads it (`Committee::parse`,
/// arbitrary UTF-8). Accepted: parsing again gives the same digest, and the
/// round protocol accepts the committee (`to_protocol`). Refused: a list of
/// located problems.
pub fn fuzz_committee_file(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("committee.toml");
    match Committee::parse(file, src) {
        Ok(c) => {
            let again = Committee::parse(file, src).map(|c| c.digest).ok();
            assert_eq!(again, Some(c.digest), "parsing is not deterministic");
            if let Err(e) = c.to_protocol() {
                panic!("config check accepts a committee the round protocol refuses: {e}");
            }
        }
        Err(e) => check_problems(&e, file, src),
    }
}

/// node.toml as `sibyl config check` reads it (`NodeConfig::parse`, the
/// node's own file without the committee it names): never panics; refused
/// text gets a list of located problems.
pub fn fuzz_node_config(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("node.toml");
    if let Err(e) = NodeConfig::parse(file, src) {
        check_problems(&e, file, src);
    }
}

fn check_problems(e: &ConfigError, file: &Path, src: &str) {
    let ConfigError::Invalid(problems) = e else {
        panic!("parsing text read a file: {e}");
    };
    assert!(!problems.is_empty(), "refused without a problem");
    let lines = src.matches('\n').count() + 1;
    for p in problems {
        assert_eq!(p.file, file);
        assert!(
            p.line <= lines,
            "problem at line {} of {lines}: {p}",
            p.line
        );
        assert!(!p.message.is_empty(), "problem without a message: {p:?}");
    }
    // The operator's view of it (line:col, key, message, hint) renders.
    assert!(!e.to_string().is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkg::{DkgDecodeError, EchoEntries};
    use frost_core::keys::dkg::{part1, part2};
    use frost_core::{Identifier, Signature};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use sibyl_aggregator::{Encode, fuzz::fixture};
    use std::collections::BTreeMap;

    const COMMITTEE_TOML: &str = include_str!("../../../deploy/examples/committee.toml");
    const NODE_TOML: &str = include_str!("../../../deploy/examples/node.toml");

    /// Valid inputs per target of `daemon/fuzz` (target name, input).
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let fx = fixture();
        let report = fx.report.report.to_bytes();
        let mut out = vec![
            ("envelope", Envelope::Round(fx.messages[0].clone()).encode()),
            (
                "envelope",
                Envelope::CatchupRequest {
                    from: 0,
                    end: u64::MAX,
                    limit: 128,
                }
                .encode(),
            ),
            (
                "envelope",
                Envelope::CatchupReply {
                    from: 0,
                    end: 42,
                    reports: vec![report.clone()],
                }
                .encode(),
            ),
            (
                "catchup",
                [
                    &[0u8][..],
                    &Envelope::CatchupRequest {
                        from: 7,
                        end: 20,
                        limit: 3,
                    }
                    .encode()[1..],
                ]
                .concat(),
            ),
            (
                "catchup",
                [
                    &[1u8][..],
                    &Envelope::CatchupReply {
                        from: 0,
                        end: u64::MAX,
                        reports: vec![report.clone(), report],
                    }
                    .encode()[1..],
                ]
                .concat(),
            ),
            ("committee_file", COMMITTEE_TOML.as_bytes().to_vec()),
            ("node_config", NODE_TOML.as_bytes().to_vec()),
        ];
        let (msg, _) = sibyl_aggregator::round::message::decode_unverified(
            &fx.messages[0],
            fx.committee.config_digest(),
        )
        .unwrap();
        let sibyl_aggregator::round::message::Payload::Observation(o) = msg.payload else {
            panic!("the first fixture message is an observation");
        };
        out.push(("commitment_hint", o.commitments[0].commitments[0].clone()));
        out.push((
            "envelope",
            Envelope::Commitments(o.commitments[0].commitments[0].clone()).encode(),
        ));
        let sig = &fx.report.report.signatures[&sibyl_aggregator::Suite::Ed25519].0;
        out.push(("commitment_hint", sig.clone()));
        out.extend(dkg_messages().into_iter().map(|m| ("dkg_message", m)));
        out
    }

    /// A 3-member ed25519 DKG's messages up to round 2, as member 1 sends them.
    fn dkg_messages() -> Vec<Vec<u8>> {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let id = |i: u16| Identifier::<Ed25519Sha512>::try_from(i).unwrap();
        let mut secrets = BTreeMap::new();
        let mut packages = BTreeMap::new();
        for i in 1..=3 {
            let (s, p) = part1::<Ed25519Sha512, _>(id(i), 3, 2, &mut rng).unwrap();
            secrets.insert(i, s);
            packages.insert(i, p);
        }
        let others: BTreeMap<_, _> = packages
            .iter()
            .filter(|(i, _)| **i != 1)
            .map(|(i, p)| (id(*i), p.clone()))
            .collect();
        let (_, round2_out) = part2(secrets[&1].clone(), &others).unwrap();
        let session = [0x42; 32];
        let package1 = packages[&1].serialize().unwrap();
        let signature = Signature::<Ed25519Sha512>::deserialize(
            &fixture().report.report.signatures[&sibyl_aggregator::Suite::Ed25519].0,
        )
        .unwrap()
        .serialize()
        .unwrap();
        let entries: EchoEntries = (1..=3u16)
            .map(|i| (i, ([i as u8; 32], signature.clone())))
            .collect();
        let package2 = round2_out[&id(2)].serialize().unwrap();
        vec![
            DkgMessage::Round1 {
                nonces: (1..=3u16).map(|i| (i, [i as u8; 32])).collect(),
                package: package1,
                signature: signature.clone(),
            }
            .encode(&session),
            DkgMessage::Echo { entries }.encode(&session),
            DkgMessage::Round2 {
                package: package2.clone(),
                signature: signature.clone(),
            }
            .encode(&session),
            DkgMessage::Nonce { nonce: [7; 32] }.encode(&session),
            DkgMessage::Complaint {
                accused: 2,
                package: package2,
                signature: signature.clone(),
            }
            .encode(&session),
            DkgMessage::Done {
                public_key_package_hash: [9; 32],
            }
            .encode(&session),
        ]
    }

    /// Found by `cargo fuzz run dkg_message`: a round-1 nonce list out of
    /// member order decoded, and re-encoded sorted (two byte strings for
    /// one message). Lists must be in ascending member order.
    #[test]
    fn dkg_lists_out_of_member_order_are_refused() {
        let msg = DkgMessage::Round1 {
            nonces: BTreeMap::from([(1, [1; 32]), (2, [2; 32])]),
            package: vec![7],
            signature: vec![8],
        };
        let good = msg.encode(&[9; 32]);
        assert!(DkgMessage::decode(&good).is_ok());
        // magic 4, version 1, kind 1, session 32, count 2: entries of 34 at 40.
        let mut swapped = good.clone();
        swapped[40..74].copy_from_slice(&good[74..108]);
        swapped[74..108].copy_from_slice(&good[40..74]);
        assert!(matches!(
            DkgMessage::decode(&swapped),
            Err(DkgDecodeError::OutOfOrder(1))
        ));
        fuzz_dkg_message(&swapped);
    }

    /// Every seed is accepted by its decoder and passes its target's oracle.
    /// With `SIBYL_FUZZ_SEEDS=DIR` set, the seeds are also written to
    /// `DIR/<target>/` (how `daemon/fuzz/seeds` was made).
    #[test]
    fn seeds_pass_their_targets() {
        let seeds = seeds();
        for (target, input) in &seeds {
            let input = input.as_slice();
            match *target {
                "envelope" => {
                    assert!(Envelope::decode(input).is_ok());
                    fuzz_envelope(input);
                }
                "commitment_hint" => fuzz_commitment_hint(input),
                "catchup" => {
                    let mut wire = vec![if input[0] & 1 == 1 {
                        TAG_CATCHUP_REPLY
                    } else {
                        TAG_CATCHUP_REQUEST
                    }];
                    wire.extend_from_slice(&input[1..]);
                    assert!(Envelope::decode(&wire).is_ok());
                    fuzz_catchup(input);
                }
                "dkg_message" => {
                    assert!(DkgMessage::decode(input).is_ok());
                    fuzz_dkg_message(input);
                }
                "committee_file" => {
                    let src = std::str::from_utf8(input).unwrap();
                    let c = Committee::parse(Path::new("c.toml"), src).unwrap();
                    assert!(c.to_protocol().is_ok());
                    fuzz_committee_file(input);
                }
                "node_config" => {
                    let src = std::str::from_utf8(input).unwrap();
                    assert!(NodeConfig::parse(Path::new("n.toml"), src).is_ok());
                    fuzz_node_config(input);
                }
                other => panic!("seed for unknown target {other}"),
            }
        }
        if let Ok(dir) = std::env::var("SIBYL_FUZZ_SEEDS") {
            for (i, (target, input)) in seeds.iter().enumerate() {
                let dir = Path::new(&dir).join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
            }
        }
    }

    /// The oracles hold on broken inputs too: cut and flipped seeds, and
    /// config text with mistakes on known lines.
    #[test]
    fn oracles_hold_on_broken_inputs() {
        for (target, input) in seeds() {
            for cut in [0, 1, input.len() / 2, input.len().saturating_sub(1)] {
                let mut bytes = input[..cut].to_vec();
                if let Some(b) = bytes.last_mut() {
                    *b ^= 0x01;
                }
                match target {
                    "envelope" => fuzz_envelope(&bytes),
                    "commitment_hint" => fuzz_commitment_hint(&bytes),
                    "catchup" => fuzz_catchup(&bytes),
                    "dkg_message" => fuzz_dkg_message(&bytes),
                    "committee_file" => fuzz_committee_file(&bytes),
                    _ => fuzz_node_config(&bytes),
                }
            }
        }
        let round1 = &dkg_messages()[0];
        let mut long = round1.clone();
        long.push(0);
        assert_eq!(
            DkgMessage::decode(&long),
            Err(DkgDecodeError::TrailingBytes(1))
        );
        assert_eq!(
            DkgMessage::decode(&round1[..round1.len() - 1]),
            Err(DkgDecodeError::Truncated)
        );
        assert_eq!(DkgMessage::decode(b"hello"), Err(DkgDecodeError::NotDkg));
        let bad = COMMITTEE_TOML.replace("threshold = 3", "threshold = 9");
        let e = Committee::parse(Path::new("c.toml"), &bad).unwrap_err();
        assert_eq!(e.problems().len(), 1);
        assert!(e.problems()[0].line > 0);
        fuzz_committee_file(bad.as_bytes());
        let e = NodeConfig::parse(Path::new("n.toml"), "[node]\nindex = \"one\"\n").unwrap_err();
        assert_eq!(e.problems().len(), 1);
        fuzz_node_config(b"[node]\nindex = \"one\"\n");
    }
}
