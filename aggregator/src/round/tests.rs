//! Unit tests of the round state machine and its wire messages, driven by
//! hand (the simulator in `crate::sim` covers whole committees).

use super::committee::{Committee, FeedConfig, Member, Timeouts};
use super::message::{
    MAX_MESSAGE_BYTES, MessageError, ObservationEntry, ObservationMsg, OffersMsg, Payload,
    ProposalMsg, RefusalMsg, RefusalReason, RelayedOffers, ShareMsg, SignedMessage,
    SuiteCommitments, SuitePackage, SuiteShare,
};
use super::*;
use crate::codec::DecodeError;
use crate::report::{ConfigDigest, Suite};
use crate::round::evidence::EvidenceError;
use crate::testkit::dealer_keys;
use frost_core::Identifier;
use frost_ed25519::Ed25519Sha512 as Ed;
use frost_secp256k1_evm::Secp256K1Keccak256 as Evm;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: TimestampMs = 1_760_000_000_000;
const DIGEST: ConfigDigest = ConfigDigest([7; 32]);

struct Harness {
    committee: Arc<Committee>,
    seeds: Vec<[u8; 32]>,
    nodes: Vec<Node>,
    rng: ChaCha20Rng,
}

fn feed(i: usize) -> FeedId {
    FeedId::new(format!("F{i}-USD")).unwrap()
}

fn harness<C: SibylSuite>(n: u16, f: u16) -> Harness {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let seeds: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
    let members = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| Member {
            index: i as u16 + 1,
            identity: SigningKey::from_bytes(s).verifying_key().to_bytes(),
        })
        .collect();
    let feeds = (0..2)
        .map(|i| FeedConfig {
            id: feed(i),
            decimals: 8,
            deviation_bps: 50,
            heartbeat_ms: 60_000,
            policy: Default::default(),
        })
        .collect();
    let t = 2 * f + 1;
    // leader_seed 0: round r is led by member (r mod n) + 1.
    let committee =
        Arc::new(Committee::new(members, t, f, 0, feeds, DIGEST, Timeouts::default()).unwrap());
    let dealer = dealer_keys::<C, _>(n, t, &mut rng).unwrap();
    let nodes = (1..=n)
        .map(|i| {
            let id = Identifier::<C>::try_from(i).unwrap();
            let keys = NodeKeys {
                identity_seed: seeds[usize::from(i) - 1],
                key_package: dealer.key_packages[&id].clone(),
                public_key_package: dealer.public_key_package.clone(),
            };
            Node::new(committee.clone(), i, keys, Restore::default()).unwrap()
        })
        .collect();
    Harness {
        committee,
        seeds,
        nodes,
        rng,
    }
}

/// A committee that signs with both suites: every member holds keys of
/// each (two dealers). Also returns the group keys a consumer trusts.
fn harness_both(n: u16, f: u16) -> (Harness, crate::verify::GroupKeys) {
    let mut h = harness::<Ed>(n, f);
    let t = 2 * f + 1;
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let ed = dealer_keys::<Ed, _>(n, t, &mut rng).unwrap();
    let evm = dealer_keys::<Evm, _>(n, t, &mut rng).unwrap();
    h.nodes = (1..=n)
        .map(|i| {
            let keys = NodeKeySet::new(h.seeds[usize::from(i) - 1])
                .with(
                    ed.key_packages[&Identifier::try_from(i).unwrap()].clone(),
                    ed.public_key_package.clone(),
                )
                .with(
                    evm.key_packages[&Identifier::try_from(i).unwrap()].clone(),
                    evm.public_key_package.clone(),
                );
            Node::new(h.committee.clone(), i, keys, Restore::default()).unwrap()
        })
        .collect();
    let keys = crate::verify::GroupKeys::new(DIGEST)
        .with_ed25519(*ed.public_key_package.verifying_key())
        .with_secp256k1_evm(*evm.public_key_package.verifying_key());
    (h, keys)
}

/// Runs the committee from `at` until no message is in flight: every send
/// and broadcast is delivered at once, every ledger write succeeds.
/// Returns each member's signed reports and evidence.
fn run_until_quiet(
    h: &mut Harness,
    at: TimestampMs,
    price: Price,
) -> (Vec<Vec<SignedReport>>, Vec<Evidence>) {
    let n = h.nodes.len() as u16;
    let queue: VecDeque<(u16, Input)> = (1..=n)
        .map(|m| (m, observations(price + i128::from(m), at)))
        .collect();
    deliver_until_quiet(h, at, queue)
}

/// [`run_until_quiet`] from any first inputs.
fn deliver_until_quiet(
    h: &mut Harness,
    at: TimestampMs,
    mut queue: VecDeque<(u16, Input)>,
) -> (Vec<Vec<SignedReport>>, Vec<Evidence>) {
    let n = h.nodes.len() as u16;
    let mut reports = vec![Vec::new(); usize::from(n)];
    let mut evidence = Vec::new();
    let mut steps = 0;
    while let Some((to, input)) = queue.pop_front() {
        steps += 1;
        assert!(steps < 10_000, "the round does not settle");
        for action in h.handle(to, at + 1, input) {
            match action {
                Action::Send { to: dest, bytes } => {
                    queue.push_back((dest, Input::Message { from: to, bytes }))
                }
                Action::Broadcast { bytes } => {
                    for dest in (1..=n).filter(|d| *d != to) {
                        queue.push_back((
                            dest,
                            Input::Message {
                                from: to,
                                bytes: bytes.clone(),
                            },
                        ));
                    }
                }
                Action::RecordSigning { round, digest } => {
                    queue.push_back((to, Input::SigningRecorded { round, digest }))
                }
                Action::SignedReport(r) => reports[usize::from(to) - 1].push(r),
                Action::Blame(e) => evidence.push(e),
                _ => {}
            }
        }
    }
    (reports, evidence)
}

fn observations(price: Price, now: TimestampMs) -> Input {
    Input::Observations(
        (0..2)
            .map(|i| LocalObservation::basic(feed(i), price + i as i128, 10, now))
            .collect(),
    )
}

/// What `actions` send, in order; a broadcast is addressed to `0`.
fn sends(actions: &[Action]) -> Vec<(u16, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => Some((*to, bytes.clone())),
            Action::Broadcast { bytes } => Some((0, bytes.clone())),
            _ => None,
        })
        .collect()
}

/// The proposals for signers among `actions`, by recipient.
fn signer_proposals(h: &Harness, actions: &[Action]) -> Vec<(u16, Vec<u8>)> {
    sends(actions)
        .into_iter()
        .filter(|(_, b)| is_signer_proposal(h, b))
        .collect()
}

/// Whether `bytes` is a proposal for a signer (it carries the attributed
/// observations; a follower's copy does not).
fn is_signer_proposal(h: &Harness, bytes: &[u8]) -> bool {
    matches!(decode(h, bytes).payload, Payload::Proposal(p) if !p.observations.is_empty())
}

fn decode(h: &Harness, bytes: &[u8]) -> SignedMessage {
    SignedMessage::decode(bytes, &h.committee).unwrap()
}

/// The reasons of the signed refusals among `actions`.
fn refusals(h: &Harness, actions: &[Action]) -> Vec<RefusalReason> {
    sends(actions)
        .iter()
        .filter_map(|(_, b)| match decode(h, b).payload {
            Payload::Refusal(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

/// The reports asked for among `actions`.
fn asks(actions: &[Action]) -> Vec<(Round, Vec<u16>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AskReport { round, peers } => Some((*round, peers.clone())),
            _ => None,
        })
        .collect()
}

/// How many signature shares `actions` send.
fn shares(h: &Harness, actions: &[Action]) -> usize {
    sends(actions)
        .iter()
        .filter(|(_, b)| matches!(decode(h, b).payload, Payload::Share(_)))
        .count()
}

/// A commitments hint carrying `firsts` (one per suite).
fn hint(firsts: &[Vec<u8>]) -> Vec<u8> {
    let mut w = crate::codec::Writer::new();
    w.seq(firsts.iter(), |w, c| {
        w.bytes(c);
    });
    w.finish()
}

impl Harness {
    fn handle(&mut self, member: u16, now: TimestampMs, input: Input) -> Vec<Action> {
        self.nodes[usize::from(member) - 1].handle(now, input, &mut self.rng)
    }
}

/// Leader 1's ledger records its pending signing at `at`: its actions (its
/// share, and the report if that completed an attempt).
fn leader_records(h: &mut Harness, at: TimestampMs) -> Vec<Action> {
    let own = h.nodes[0]
        .pending
        .first()
        .map(|p| p.record)
        .expect("a pending signing");
    h.handle(
        1,
        at,
        Input::SigningRecorded {
            round: own.round,
            digest: own.digest,
        },
    )
}

/// Round 0 (leader 1): every member observes and the leader gets the
/// observations. Returns the leader's actions (its proposals and its own
/// ledger write).
fn round0_leader_actions(h: &mut Harness) -> Vec<Action> {
    let mut to_leader = Vec::new();
    for m in 2..=h.committee.n() as u16 {
        let a = h.handle(m, T0, observations(1_000_000 + i128::from(m), T0));
        to_leader.extend(sends(&a));
    }
    let mut out = h.handle(1, T0, observations(1_000_001, T0));
    for (_, bytes) in to_leader {
        out.extend(h.handle(1, T0 + 1, Input::Message { from: 0, bytes }));
    }
    out
}

/// Round 0 (leader 1) of a 4-member committee up to the leader's proposals.
/// Returns the proposals the leader sent to signers, by recipient (not the
/// follower's copy).
fn up_to_proposals(h: &mut Harness) -> Vec<(u16, Vec<u8>)> {
    let out = round0_leader_actions(h);
    let out = sends(&out);
    out.into_iter()
        .filter(|(_, b)| is_signer_proposal(h, b))
        .collect()
}

#[test]
fn a_round_signs_only_after_the_ledger_recorded_it() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    assert_eq!(proposals.len(), 2, "leader plus two signers of t = 3");
    let mut shares = Vec::new();
    for (to, bytes) in proposals {
        let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
        // Two-phase: the share never leaves before the record.
        assert!(sends(&a).is_empty(), "{a:?}");
        let Some(Action::RecordSigning { round, digest }) = a
            .iter()
            .find(|a| matches!(a, Action::RecordSigning { .. }))
            .cloned()
        else {
            panic!("no RecordSigning in {a:?}");
        };
        assert_eq!(round, 0);
        let a = h.handle(to, T0 + 3, Input::SigningRecorded { round, digest });
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert!(matches!(decode(&h, &s[0].1).payload, Payload::Share(_)));
        shares.push(s[0].1.clone());
        assert_eq!(
            h.nodes[usize::from(to) - 1].last_signed(),
            Some(SigningRecord { round, digest })
        );
    }
    // The leader's own share goes through its own ledger step.
    let leader = &h.nodes[0];
    let pending = leader.pending.first().map(|p| p.record).unwrap();
    let mut actions = h.handle(
        1,
        T0 + 3,
        Input::SigningRecorded {
            round: pending.round,
            digest: pending.digest,
        },
    );
    for bytes in shares {
        actions.extend(h.handle(1, T0 + 4, Input::Message { from: 2, bytes }));
    }
    let report = signed_report(&actions).expect("leader aggregates a signed report");
    assert!(h.nodes[1].verify_report(&report));
    assert_eq!(report.leaves.len(), 2);
    // The median of 1_000_001..=1_000_004 (lower median) for feed 0.
    assert_eq!(report.leaves[0].price, 1_000_002);
    assert_eq!(report.leaves[0].num_observations, 4);
}

/// Hands member `to` the leader's proposal; its first action must be the
/// signing-ledger write, whose round and digest are returned.
fn proposal_to_record(h: &mut Harness, to: u16, bytes: &[u8]) -> (Round, [u8; 32]) {
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: bytes.to_vec(),
        },
    );
    let Some(Action::RecordSigning { round, digest }) = a.into_iter().next() else {
        panic!("expected RecordSigning first");
    };
    (round, digest)
}

#[test]
fn refused_ledger_means_no_share_and_a_nonce_is_used_once() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let (round, digest) = proposal_to_record(&mut h, to, &bytes);
    let a = h.handle(to, T0 + 3, Input::SigningRefused { round, digest });
    // No share; the leader is told why, signed, so it moves on at once.
    assert_eq!(shares(&h, &a), 0);
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Ledger]);
    // Recorded now: sign once.
    let a = h.handle(
        to,
        T0 + 3,
        Input::Message {
            from: 1,
            bytes: bytes.clone(),
        },
    );
    assert!(matches!(a[0], Action::RecordSigning { .. }));
    let a = h.handle(to, T0 + 3, Input::SigningRecorded { round, digest });
    assert_eq!(sends(&a).len(), 1);
    // The same proposal again (a relayed copy, or the leader's late one):
    // recognised and ignored, no second share and no refusal.
    let a = h.handle(to, T0 + 4, Input::Message { from: 1, bytes });
    assert!(sends(&a).is_empty(), "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(h.nodes[usize::from(to) - 1].stats().proposals_duplicate, 1);
    // Anything else asking that attempt's nonce again signs nothing (the
    // refusal for attempt 0 went out already, with the ledger's reason).
    let node = &mut h.nodes[usize::from(to) - 1];
    node.prepare_signing(T0 + 5, SigningRecord { round, digest }, 0, Vec::new());
    let a = std::mem::take(&mut node.out);
    assert_eq!(shares(&h, &a), 0);
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(h.nodes[usize::from(to) - 1].stats().nonce_reuse_refused, 1);
}

/// Re-signs a proposal as the leader after `edit`.
fn forge(h: &Harness, bytes: &[u8], edit: impl FnOnce(&mut ProposalMsg)) -> Vec<u8> {
    let m = decode(h, bytes);
    let Payload::Proposal(mut p) = m.payload else {
        panic!("not a proposal");
    };
    edit(&mut p);
    let leader = SigningKey::from_bytes(&h.seeds[usize::from(m.sender) - 1]);
    SignedMessage::sign(&leader, &DIGEST, m.round, m.sender, Payload::Proposal(p)).bytes
}

/// A proposal's timestamp is a clock sample only in its first attempt: a
/// retry carries the first attempt's timestamp and arrives late by the
/// timeouts before it, which would read as this member's clock being ahead.
#[test]
fn only_a_first_attempt_proposal_is_a_clock_sample() {
    let late = |attempt: u8| {
        let mut h = harness::<Ed>(4, 1);
        let proposals = up_to_proposals(&mut h);
        let (to, bytes) = proposals[0].clone();
        let bytes = forge(&h, &bytes, |p| p.attempt = attempt);
        // Delivered two seconds after it was stamped.
        h.handle(to, T0 + 2_000, Input::Message { from: 1, bytes });
        h.nodes[usize::from(to) - 1].clock.samples.get(&1).copied()
    };
    assert!(late(0).is_some_and(|s| s >= 1_900), "{:?}", late(0));
    assert_eq!(late(1), None);
}

#[test]
fn members_refuse_a_report_that_does_not_match_the_observations() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let forged = forge(&h, &bytes, |p| {
        p.leaves[0].price += 1;
        p.merkle_root = merkle_root(&p.leaves);
    });
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: forged,
        },
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Mismatch]);
    assert_eq!(sends(&a).len(), 1, "only the refusal");
    assert_eq!(h.nodes[usize::from(to) - 1].stats().proposals_refused, 1);
}

#[test]
fn members_refuse_too_few_attributed_observations_and_stale_timestamps() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let fewer = forge(&h, &bytes, |p| {
        p.observations.truncate(2);
    });
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: fewer,
        },
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Observation]);
    assert_eq!(shares(&h, &a), 0);
    assert_eq!(h.nodes[usize::from(to) - 1].stats().proposals_refused, 1);
    // A report timestamp far from the member's clock.
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let old = forge(&h, &bytes, |p| p.timestamp_ms -= 10_000);
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: old,
        },
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(h.nodes[usize::from(to) - 1].stats().proposals_refused, 1);
    // A timestamp within the clock bound but not later than a report already signed.
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    h.nodes[usize::from(to) - 1]
        .last_values
        .insert(feed(0), LastValue::price_only(1, T0 + 1_000));
    let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Timestamp]);
}

#[test]
fn never_two_different_reports_for_one_round_and_equivocation_is_evidence() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: bytes.clone(),
        },
    );
    let Some(Action::RecordSigning { round, digest }) = a.into_iter().next() else {
        panic!()
    };
    h.handle(to, T0 + 2, Input::SigningRecorded { round, digest });
    // The leader now proposes a different (but honestly computed) report.
    let other = forge(&h, &bytes, |p| p.timestamp_ms += 1);
    let a = h.handle(
        to,
        T0 + 3,
        Input::Message {
            from: 1,
            bytes: other,
        },
    );
    assert!(sends(&a).is_empty());
    let ev = a
        .iter()
        .find_map(|a| match a {
            Action::Blame(e) => Some(e.clone()),
            _ => None,
        })
        .expect("equivocation is blamed");
    let pubkeys = h.nodes[0].public_key_package::<Ed>().unwrap().clone();
    assert_eq!(ev.verify::<Ed>(&h.committee, &pubkeys), Ok(1));
    // Evidence that anyone can check: tampering breaks it.
    if let Evidence::EquivocatingProposals { first, second } = &ev {
        let same = Evidence::EquivocatingProposals {
            first: first.clone(),
            second: first.clone(),
        };
        assert_eq!(
            same.verify::<Ed>(&h.committee, &pubkeys),
            Err(EvidenceError::Identical)
        );
        let mut broken = second.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        let bad = Evidence::EquivocatingProposals {
            first: first.clone(),
            second: broken,
        };
        assert!(matches!(
            bad.verify::<Ed>(&h.committee, &pubkeys),
            Err(EvidenceError::BadMessage { .. })
        ));
    } else {
        panic!("wrong evidence kind {ev:?}");
    }
    // And a restarted node with that ledger entry refuses the other report too.
    assert_eq!(
        h.nodes[usize::from(to) - 1].last_signed(),
        Some(SigningRecord { round, digest })
    );
}

#[test]
fn invalid_share_is_attributed_with_verifiable_evidence_and_the_leader_retries() {
    let mut h = harness::<Ed>(4, 1);
    h.nodes[1].faults.invalid_shares = true; // member 2
    let proposals = up_to_proposals(&mut h);
    let mut leader_in = Vec::new();
    for (to, bytes) in proposals {
        let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
        if let Some(Action::RecordSigning { round, digest }) = a.first().cloned() {
            leader_in.extend(sends(&h.handle(
                to,
                T0 + 2,
                Input::SigningRecorded { round, digest },
            )));
        }
    }
    let mut out = leader_records(&mut h, T0 + 3);
    for (_, bytes) in leader_in {
        out.extend(h.handle(1, T0 + 3, Input::Message { from: 0, bytes }));
    }
    let ev: Vec<Evidence> = out
        .iter()
        .filter_map(|a| match a {
            Action::Blame(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ev.len(), 1, "{out:?}");
    let pubkeys = h.nodes[0].public_key_package::<Ed>().unwrap().clone();
    assert_eq!(ev[0].verify::<Ed>(&h.committee, &pubkeys), Ok(2));
    // The retry goes to a signer set without member 2, with attempt 1;
    // member 2 gets only the follower's copy.
    let retry = signer_proposals(&h, &out);
    assert!(!retry.is_empty());
    let copies: Vec<u16> = sends(&out)
        .into_iter()
        .filter(|(_, b)| matches!(decode(&h, b).payload, Payload::Proposal(_)))
        .filter(|(_, b)| !is_signer_proposal(&h, b))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(copies, vec![2]);
    for (to, bytes) in &retry {
        assert_ne!(*to, 2);
        let Payload::Proposal(p) = decode(&h, bytes).payload else {
            panic!()
        };
        assert_eq!(p.attempt, 1);
    }
}

#[test]
fn pacemaker_moves_to_the_next_round_and_leader() {
    let mut h = harness::<Ed>(4, 1);
    let a = h.handle(2, T0, observations(1, T0));
    assert!(a.contains(&Action::RoundEntered {
        round: 0,
        leader: 1,
        start_ms: T0,
    }));
    let round_ms = h.committee.timeouts().round_ms;
    let a = h.handle(2, T0 + round_ms, Input::Tick);
    assert!(
        a.contains(&Action::RoundEntered {
            round: 1,
            leader: 2,
            start_ms: T0 + round_ms,
        }),
        "{a:?}"
    );
    assert_eq!(h.nodes[1].stats().rounds_timed_out, 1);
}

#[test]
fn restored_member_does_not_observe_a_round_twice() {
    let h0 = harness::<Ed>(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let restore = Restore {
        round: 5,
        last_observed_round: Some(5),
        ..Restore::default()
    };
    let mut node = restarted(&h0, 2, restore);
    let a = node.handle(T0, observations(1, T0), &mut rng);
    assert!(sends(&a).is_empty(), "{a:?}");
    let a = node.handle(T0 + 2_000, observations(1, T0 + 2_000), &mut rng);
    assert!(a.contains(&Action::RecordObservation { round: 6 }));
    assert_eq!(sends(&a).len(), 1);
}

/// The harness's member `i` restarted from `restore` (same keys: the
/// harness's dealer ran first on its seeded rng).
fn restarted(h: &Harness, i: u16, restore: Restore) -> Node {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let dealer = dealer_keys::<Ed, _>(4, 3, &mut rng).unwrap();
    let id = Identifier::<Ed>::try_from(i).unwrap();
    let keys = NodeKeys {
        identity_seed: h.seeds[usize::from(i) - 1],
        key_package: dealer.key_packages[&id].clone(),
        public_key_package: dealer.public_key_package.clone(),
    };
    Node::new(h.committee.clone(), i, keys, restore).unwrap()
}

#[test]
fn a_power_cut_that_loses_the_signing_ledger_cannot_make_a_member_sign_twice() {
    // The daemon's default `ledger_sync = "normal"` does not fsync the
    // signing ledger: a power cut may lose its last rows. What survives is
    // the fsynced observation record, and that alone must be enough.
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let (round, digest) = proposal_to_record(&mut h, to, &bytes);
    let a = h.handle(to, T0 + 3, Input::SigningRecorded { round, digest });
    assert_eq!(sends(&a).len(), 1, "signed round 0 once");

    // Power cut: the ledger row is gone, the observation record says round 0.
    let cut = Restore {
        round: 0,
        last_observed_round: Some(0),
        ..Restore::default()
    };
    assert_eq!(h.committee.leader(0), 1);
    let mut node = restarted(&h, to, cut);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // The same proposal (or any other for round 0) finds no nonce of this
    // process: no ledger step, no share.
    let a = node.handle(
        T0 + 5,
        Input::Message {
            from: 1,
            bytes: bytes.clone(),
        },
        &mut rng,
    );
    assert_eq!(shares(&h, &a), 0, "{a:?}");
    assert_eq!(refusals(&h, &a).len(), 1, "{a:?}");
    assert!(
        !a.iter().any(|a| matches!(a, Action::RecordSigning { .. })),
        "{a:?}"
    );
    // Nor does it offer new commitments for round 0, which a second proposal
    // for the round could then use.
    let a = node.handle(T0 + 6, observations(1_000_009, T0 + 6), &mut rng);
    assert!(sends(&a).is_empty(), "{a:?}");
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::RecordObservation { .. }))
    );

    // Contrast: had the observation record been lost as well, the member
    // would observe round 0 again with fresh commitments. The record is what
    // keeps the unsynced ledger safe.
    let mut bare = restarted(&h, to, Restore::default());
    let a = bare.handle(T0 + 6, observations(1_000_009, T0 + 6), &mut rng);
    assert!(a.contains(&Action::RecordObservation { round: 0 }), "{a:?}");
    assert_eq!(sends(&a).len(), 1);
}

#[test]
fn node_new_rejects_wrong_keys() {
    let h = harness::<Ed>(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let dealer = dealer_keys::<Ed, _>(4, 3, &mut rng).unwrap();
    let id = Identifier::<Ed>::try_from(2u16).unwrap();
    let keys = NodeKeys {
        identity_seed: h.seeds[0],
        key_package: dealer.key_packages[&id].clone(),
        public_key_package: dealer.public_key_package.clone(),
    };
    assert!(matches!(
        Node::new(h.committee.clone(), 2, keys.clone(), Restore::default()),
        Err(NodeError::IdentityMismatch(2))
    ));
    assert!(matches!(
        Node::new(h.committee.clone(), 9, keys, Restore::default()),
        Err(NodeError::NotAMember(9))
    ));
}

// ------------------------------------------------------------ wire messages

/// Member `origin`'s signed offers of `commands`, as another member relays them.
fn relayed_offers(h: &Harness, origin: u16, commands: Vec<MarginCommand>) -> RelayedOffers {
    let key = SigningKey::from_bytes(&h.seeds[usize::from(origin) - 1]);
    let payload = Payload::Offers(OffersMsg {
        commands: commands.clone(),
    });
    RelayedOffers {
        origin,
        commands,
        bytes: SignedMessage::sign(&key, &DIGEST, 3, origin, payload).bytes,
    }
}

fn sample_messages(h: &Harness) -> Vec<SignedMessage> {
    let key = SigningKey::from_bytes(&h.seeds[0]);
    let relayed = vec![relayed_offers(h, 2, vec![offer(2, 7, "{}")])];
    let obs = Payload::Observation(ObservationMsg {
        entries: vec![ObservationEntry {
            feed: feed(0),
            price: -5,
            spread: 3,
            observed_at_ms: T0,
            bid: Some(-6),
            ask: None,
            venues: 4,
            min_venues: 3,
            flags: super::message::entry_flags::PEG_DEPARTED,
        }],
        commitments: vec![
            SuiteCommitments {
                suite: Suite::Ed25519,
                commitments: vec![vec![1, 2, 3]],
            },
            SuiteCommitments {
                suite: Suite::Secp256k1Evm,
                commitments: vec![vec![4; 5], vec![6]],
            },
        ],
        commands: vec![offer(1, 3, "own")],
        margin_roots: Vec::new(),
        relayed,
    });
    let obs_msg = SignedMessage::sign(&key, &DIGEST, 4, 1, obs);
    let offers = Payload::Offers(OffersMsg {
        commands: vec![offer(1, 3, "own"), offer(1, 4, "next")],
    });
    let leaf = ReportLeaf::basic(feed(0), 9, 1, 3, T0);
    let proposal = Payload::Proposal(ProposalMsg {
        attempt: 1,
        timestamp_ms: T0,
        merkle_root: [3; 32],
        leaves: vec![leaf.clone()],
        observations: vec![obs_msg.bytes.clone()],
        signing_packages: vec![
            SuitePackage {
                suite: Suite::Ed25519,
                package: vec![9; 40],
            },
            SuitePackage {
                suite: Suite::Secp256k1Evm,
                package: vec![8; 41],
            },
        ],
        signer_observations: vec![obs_msg.bytes.clone()],
        key_set: 0x0123_4567_89ab_cdef,
        commands: Vec::new(),
        margin_state: None,
    });
    let refusal = Payload::Refusal(RefusalMsg {
        attempt: 2,
        report_digest: [7; 32],
        reason: RefusalReason::Timestamp,
        clock_ms: T0 + 3_000,
    });
    let share = Payload::Share(ShareMsg {
        attempt: 0,
        report_digest: [1; 32],
        shares: vec![
            SuiteShare {
                suite: Suite::Ed25519,
                package_hash: [2; 32],
                share: vec![5; 32],
            },
            SuiteShare {
                suite: Suite::Secp256k1Evm,
                package_hash: [3; 32],
                share: vec![4; 32],
            },
        ],
    });
    let report = Payload::Report(SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: DIGEST,
            round: 4,
            timestamp_ms: T0,
            merkle_root: [3; 32],
            margin_root: [0; 32],
        },
        leaves: vec![leaf],
        signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(vec![8; 64]))]),
        commands: Vec::new(),
        margin_state: None,
    });
    [proposal, share, report, refusal, offers]
        .into_iter()
        .map(|p| SignedMessage::sign(&key, &DIGEST, 4, 1, p))
        .chain([obs_msg])
        .collect()
}

#[test]
fn messages_round_trip() {
    let h = harness::<Ed>(4, 1);
    for m in sample_messages(&h) {
        assert_eq!(SignedMessage::decode(&m.bytes, &h.committee).unwrap(), m);
    }
}

#[test]
fn every_truncation_and_extension_is_a_typed_error() {
    let h = harness::<Ed>(4, 1);
    for m in sample_messages(&h) {
        for len in 0..m.bytes.len() {
            match SignedMessage::decode(&m.bytes[..len], &h.committee) {
                Err(MessageError::Decode(_)) => {}
                other => panic!("truncation to {len}: {other:?}"),
            }
        }
        let mut longer = m.bytes.clone();
        longer.push(0);
        assert!(matches!(
            SignedMessage::decode(&longer, &h.committee),
            Err(MessageError::Decode(DecodeError::TrailingBytes { .. }))
        ));
    }
}

#[test]
fn wrong_version_digest_sender_signature_and_size_are_rejected() {
    let h = harness::<Ed>(4, 1);
    for m in sample_messages(&h) {
        let mut b = m.bytes.clone();
        b[0] = PROTOCOL_VERSION + 1;
        assert!(matches!(
            SignedMessage::decode(&b, &h.committee),
            Err(MessageError::Decode(DecodeError::WrongVersion { .. }))
        ));
        let mut b = m.bytes.clone();
        b[1] ^= 0xff;
        assert!(matches!(
            SignedMessage::decode(&b, &h.committee),
            Err(MessageError::Decode(DecodeError::WrongConfigDigest { .. }))
        ));
        let mut b = m.bytes.clone();
        b[1 + 32 + 8 + 1] = 9; // sender 9
        assert_eq!(
            SignedMessage::decode(&b, &h.committee),
            Err(MessageError::UnknownSender(9))
        );
        let mut b = m.bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(
            SignedMessage::decode(&b, &h.committee),
            Err(MessageError::BadSignature { sender: 1 })
        );
    }
    let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        SignedMessage::decode(&huge, &h.committee),
        Err(MessageError::Oversized { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let h = harness::<Ed>(4, 1);
        prop_assert!(SignedMessage::decode(&bytes, &h.committee).is_err());
    }

    #[test]
    fn mutated_messages_are_rejected(which in 0usize..4, pos in any::<usize>(), xor in 1u8..=255) {
        let h = harness::<Ed>(4, 1);
        let m = &sample_messages(&h)[which];
        let mut b = m.bytes.clone();
        let i = pos % b.len();
        b[i] ^= xor;
        // Any change is caught: by the decoder or by the identity signature.
        prop_assert!(SignedMessage::decode(&b, &h.committee).is_err());
    }
}

/// A relayed offers message must be another member's, signed by it, and
/// an offers message may carry only its sender's commands.
#[test]
fn relayed_offers_are_checked_against_their_origin() {
    let h = harness::<Ed>(4, 1);
    let key = SigningKey::from_bytes(&h.seeds[0]);
    let observation = |relayed: Vec<RelayedOffers>| {
        let payload = Payload::Observation(ObservationMsg {
            entries: Vec::new(),
            commitments: Vec::new(),
            commands: Vec::new(),
            margin_roots: Vec::new(),
            relayed,
        });
        SignedMessage::sign(&key, &DIGEST, 4, 1, payload).bytes
    };
    let good = relayed_offers(&h, 2, vec![offer(2, 1, "a")]);
    assert!(SignedMessage::decode(&observation(vec![good.clone()]), &h.committee).is_ok());
    // Signed by member 3 in member 2's name.
    let key3 = SigningKey::from_bytes(&h.seeds[2]);
    let payload = Payload::Offers(OffersMsg {
        commands: vec![offer(2, 1, "a")],
    });
    let forged = RelayedOffers {
        origin: 2,
        commands: vec![offer(2, 1, "a")],
        bytes: SignedMessage::sign(&key3, &DIGEST, 3, 2, payload).bytes,
    };
    assert_eq!(
        SignedMessage::decode(&observation(vec![forged]), &h.committee),
        Err(MessageError::BadRelayed {
            sender: 1,
            origin: 2
        })
    );
    // The sender's own offers, an origin twice, and something that is not
    // an offers message are refused while decoding.
    let own = relayed_offers(&h, 1, vec![offer(1, 1, "a")]);
    let twice = vec![good.clone(), relayed_offers(&h, 2, vec![offer(2, 2, "b")])];
    let not_offers = RelayedOffers {
        origin: 2,
        commands: Vec::new(),
        bytes: sample_messages(&h)[3].bytes.clone(),
    };
    for relayed in [vec![own], twice, vec![not_offers]] {
        assert!(matches!(
            SignedMessage::decode(&observation(relayed), &h.committee),
            Err(MessageError::Decode(_))
        ));
    }
    // Offers naming another origin than their sender.
    let key2 = SigningKey::from_bytes(&h.seeds[1]);
    let payload = Payload::Offers(OffersMsg {
        commands: vec![offer(3, 1, "not mine")],
    });
    let bytes = SignedMessage::sign(&key2, &DIGEST, 4, 2, payload).bytes;
    assert!(matches!(
        SignedMessage::decode(&bytes, &h.committee),
        Err(MessageError::Decode(_))
    ));
}

/// A member whose observations never reach a leader's aggregate (here it
/// sends none) still gets its commands ordered: it sends its signed offers
/// to every member, and they relay them in their observations once the
/// offers waited `RELAY_AFTER_ROUNDS` rounds; the commands are ordered
/// once, and relaying stops when a report carries them.
#[test]
fn commands_of_a_member_left_out_of_every_aggregate_are_relayed_and_ordered() {
    let mut h = harness::<Ed>(4, 1);
    h.nodes[3].faults.mute_observations = true;
    let commands = vec![offer(4, 1, "a"), offer(4, 2, "b")];
    let a = h.handle(4, T0, Input::OfferCommands(commands.clone()));
    let Some(bytes) = a.iter().find_map(|a| match a {
        Action::Broadcast { bytes } => Some(bytes),
        _ => None,
    }) else {
        panic!("member 4 sends its offers to every member: {a:?}");
    };
    assert!(matches!(decode(&h, bytes).payload, Payload::Offers(_)));
    for m in 1..=3 {
        h.handle(
            m,
            T0,
            Input::Message {
                from: 4,
                bytes: bytes.clone(),
            },
        );
    }
    let mut carried = Vec::new();
    let t = *h.committee.timeouts();
    for k in 0..5 {
        // The leader waits `observe_ms` for member 4's observation, then
        // goes on with the other three.
        sign_round(&mut h, k, 1_000_000);
        let later = T0 + k * t.round_interval_ms + t.observe_ms + 1;
        let ticks = (1..=4).map(|m| (m, Input::Tick)).collect();
        let (reports, _) = deliver_until_quiet(&mut h, later, ticks);
        let r = h.nodes[0]
            .last_report_round
            .filter(|r| *r == k)
            .and(reports[0].last().cloned())
            .expect("the round signs without member 4");
        carried.push(r.commands.clone());
        // Every member holds the same report, member 4 included.
        for (i, n) in h.nodes.iter().enumerate() {
            assert_eq!(n.last_report_round, Some(k), "member {}", i + 1);
        }
    }
    let rounds: Vec<usize> = (0..carried.len())
        .filter(|&k| !carried[k].is_empty())
        .collect();
    assert_eq!(rounds, vec![RELAY_AFTER_ROUNDS as usize], "{carried:?}");
    assert_eq!(carried[RELAY_AFTER_ROUNDS as usize], commands);
    let relayed: u64 = h.nodes[..3].iter().map(|n| n.stats().offers_relayed).sum();
    assert!(relayed >= 1, "relayed {relayed}");
    assert!(h.nodes[..3].iter().all(|n| n.held_offers.is_empty()));
}

/// Member 4's offers as member 4 broadcasts them after `commands`.
fn offers_broadcast(h: &mut Harness, at: TimestampMs, commands: Vec<MarginCommand>) -> Vec<u8> {
    let a = h.handle(4, at, Input::OfferCommands(commands));
    a.iter()
        .find_map(|a| match a {
            Action::Broadcast { bytes } => Some(bytes.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("member 4 sends its offers: {a:?}"))
}

/// Offers their origin withdrew (it sends the shorter list, here none) are
/// dropped at once; offers whose latest copy arrived `OFFERS_TTL_MS` ago
/// are not relayed (the withdrawal may not have reached this member); an
/// older copy does not replace a newer one; pending offers are sent again
/// every `OFFERS_RESEND_MS`.
#[test]
fn withdrawn_stale_and_expired_offers_are_not_relayed() {
    let mut h = harness::<Ed>(4, 1);
    let first = offers_broadcast(&mut h, T0, vec![offer(4, 1, "a")]);
    h.handle(
        1,
        T0,
        Input::Message {
            from: 4,
            bytes: first.clone(),
        },
    );
    assert_eq!(h.nodes[0].held_offers.len(), 1);
    // Withdrawn: the empty list reaches every member.
    let none = offers_broadcast(&mut h, T0 + 1, Vec::new());
    h.handle(
        1,
        T0 + 1,
        Input::Message {
            from: 4,
            bytes: none,
        },
    );
    assert!(h.nodes[0].held_offers.is_empty());
    assert!(
        h.handle(4, T0 + 2, Input::OfferCommands(Vec::new()))
            .iter()
            .all(|a| !matches!(a, Action::Broadcast { .. })),
        "nothing to withdraw twice"
    );
    // Pending again; sent again after OFFERS_RESEND_MS, not before.
    let second = offers_broadcast(&mut h, T0 + 3, vec![offer(4, 2, "b")]);
    for (at, want) in [(T0 + 4, 0), (T0 + 3 + OFFERS_RESEND_MS, 1)] {
        h.nodes[3].raw_now = at;
        let sent = h.nodes[3].stats().offers_sent;
        h.nodes[3].resend_offers_if_due();
        assert_eq!(h.nodes[3].stats().offers_sent - sent, want, "at {at}");
    }
    // Offers signed in a later round replace earlier ones; a copy from an
    // earlier round arriving late does not.
    let key4 = SigningKey::from_bytes(&h.seeds[3]);
    let payload = Payload::Offers(OffersMsg {
        commands: vec![offer(4, 2, "b"), offer(4, 3, "c")],
    });
    let later = SignedMessage::sign(&key4, &DIGEST, 1, 4, payload).bytes;
    for bytes in [second.clone(), later.clone(), second] {
        h.handle(1, T0 + 3, Input::Message { from: 4, bytes });
    }
    assert!(h.nodes[0].held_offers[&4].relayed.bytes == later);
    let n = &mut h.nodes[0];
    n.round = RELAY_AFTER_ROUNDS;
    n.raw_now = T0 + 3 + OFFERS_TTL_MS;
    assert_eq!(n.offers_to_relay().len(), 1, "waited and fresh");
    n.raw_now = T0 + 4 + OFFERS_TTL_MS;
    assert!(n.offers_to_relay().is_empty(), "expired");
    assert!(n.held_offers.is_empty());
}

#[test]
fn two_observations_for_one_round_are_verifiable_evidence() {
    let mut h = harness::<Ed>(4, 1);
    let first = sends(&h.handle(2, T0, observations(100, T0)));
    // The same member, restarted without its observation record, observes again.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let dealer = dealer_keys::<Ed, _>(4, 3, &mut rng).unwrap();
    let id = Identifier::<Ed>::try_from(2u16).unwrap();
    let keys = NodeKeys {
        identity_seed: h.seeds[1],
        key_package: dealer.key_packages[&id].clone(),
        public_key_package: dealer.public_key_package.clone(),
    };
    let mut again = Node::new(h.committee.clone(), 2, keys, Restore::default()).unwrap();
    let second = sends(&again.handle(T0 + 1, observations(101, T0 + 1), &mut rng));
    let mut out = h.handle(1, T0, Input::Tick);
    for (_, bytes) in first.into_iter().chain(second) {
        out.extend(h.handle(1, T0 + 2, Input::Message { from: 2, bytes }));
    }
    let ev = out
        .iter()
        .find_map(|a| match a {
            Action::Blame(e) => Some(e.clone()),
            _ => None,
        })
        .expect("conflicting observations are blamed");
    assert_eq!(ev.kind(), "conflicting_observations");
    let pubkeys = h.nodes[0].public_key_package::<Ed>().unwrap().clone();
    assert_eq!(ev.verify::<Ed>(&h.committee, &pubkeys), Ok(2));
    // Serialized evidence (as the daemon would store or publish it) still verifies.
    let json = serde_json::to_string(&ev).unwrap();
    let back: Evidence = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verify::<Ed>(&h.committee, &pubkeys), Ok(2));
}

#[test]
fn proposal_signature_binds_every_byte_of_its_embedded_observations() {
    let h = harness::<Ed>(4, 1);
    let msgs = sample_messages(&h);
    let (proposal, obs) = (&msgs[0], msgs.last().unwrap());
    let (decoded, hashes) =
        SignedMessage::decode_hashed(&proposal.bytes, &h.committee, None).expect("valid proposal");
    assert_eq!(&decoded, proposal);
    // The leaves' observation and the signer-only one (the same bytes here).
    assert_eq!(hashes.len(), 2);
    // The returned hash verifies the embedded observation; a wrong one does not.
    assert_eq!(
        SignedMessage::decode_hashed(&obs.bytes, &h.committee, Some(&hashes[0]))
            .expect("valid observation")
            .0,
        *obs
    );
    assert_eq!(
        SignedMessage::decode_hashed(&obs.bytes, &h.committee, Some(&[0; 64])),
        Err(MessageError::BadSignature { sender: 1 })
    );
    // Flipping any byte of the embedded observation (content or signature)
    // breaks the proposal's signature or its decoding.
    let start = proposal
        .bytes
        .windows(obs.bytes.len())
        .position(|w| w == obs.bytes.as_slice())
        .expect("observation embedded verbatim");
    for i in start..start + obs.bytes.len() {
        let mut b = proposal.bytes.clone();
        b[i] ^= 1;
        assert!(SignedMessage::decode(&b, &h.committee).is_err(), "byte {i}");
    }
}

#[test]
fn peek_reads_round_sender_and_kind_without_decoding() {
    let h = harness::<Ed>(4, 1);
    for m in sample_messages(&h) {
        assert_eq!(
            message::peek(&m.bytes),
            Some((m.round, m.sender, m.payload.kind()))
        );
    }
    assert_eq!(message::peek(&[1; 43]), None, "too short");
    let mut bad = sample_messages(&h)[0].bytes.clone();
    bad[43] = 9;
    assert_eq!(message::peek(&bad), None, "unknown kind");
}

#[test]
fn next_slot_is_the_first_grid_instant_at_or_after() {
    assert_eq!(next_slot(1_000, 250), 1_000);
    assert_eq!(next_slot(1_001, 250), 1_250);
    assert_eq!(next_slot(1_249, 250), 1_250);
    assert_eq!(next_slot(7, 0), 7, "a zero interval is treated as 1 ms");
    assert_eq!(next_slot(u64::MAX - 1, 1_000), u64::MAX, "saturates");
}

/// Runs round 0 of `h` to the leader's signed report (signers and leader
/// act at `at`); returns the leader's actions from its ledger step on.
fn finish_round_zero(h: &mut Harness, at: TimestampMs) -> Vec<Vec<Action>> {
    let proposals = up_to_proposals(h);
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for (to, bytes) in proposals {
        let a = h.handle(to, at, Input::Message { from: 1, bytes });
        let Some(Action::RecordSigning { round, digest }) = a
            .iter()
            .find(|a| matches!(a, Action::RecordSigning { .. }))
            .cloned()
        else {
            panic!("no RecordSigning in {a:?}");
        };
        let a = h.handle(to, at, Input::SigningRecorded { round, digest });
        shares.extend(sends(&a).into_iter().map(|(_, b)| b));
    }
    let mut a = leader_records(h, at);
    for bytes in shares {
        a.extend(h.handle(1, at, Input::Message { from: 2, bytes }));
    }
    all.push(a);
    all
}

#[test]
fn after_a_report_the_next_round_starts_on_the_round_grid() {
    let mut h = harness::<Ed>(4, 1);
    let interval = h.committee.timeouts().round_interval_ms;
    // T0 is on the grid; the report comes 7 ms into the round.
    assert_eq!(T0 % interval, 0);
    let a = finish_round_zero(&mut h, T0 + 7).concat();
    assert!(a.iter().any(|a| matches!(a, Action::SignedReport(_))));
    let wake = a
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::WakeAt(at) => Some(*at),
            _ => None,
        })
        .expect("a wake-up for the next round");
    assert_eq!(wake, T0 + interval, "the next slot, not 7 ms later");
    // Entered a little late (timer slack): the round still starts at its slot.
    let a = h.handle(1, T0 + interval + 2, Input::Tick);
    assert!(
        a.contains(&Action::RoundEntered {
            round: 1,
            leader: 2,
            start_ms: T0 + interval,
        }),
        "{a:?}"
    );
}

#[test]
fn the_leader_sends_proposals_before_its_own_ledger_write() {
    let mut h = harness::<Ed>(4, 1);
    let out = round0_leader_actions(&mut h);
    let first_record = out
        .iter()
        .position(|a| matches!(a, Action::RecordSigning { .. }))
        .expect("the leader signs too");
    let proposals: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::Send { bytes, .. } if is_signer_proposal(&h, bytes)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(proposals.len(), 2);
    assert!(
        proposals.iter().all(|&i| i < first_record),
        "proposals go out before the leader's ledger write: {out:?}"
    );
}

#[test]
fn precomputed_nonces_serve_one_round_and_are_fresh_each_time() {
    let mut h = harness::<Ed>(4, 1);
    h.nodes[1].precompute(&mut h.rng);
    let spare = h.nodes[1].spare_commitments().unwrap();
    let a = h.handle(2, T0, observations(1_000_000, T0));
    let Payload::Observation(o) = decode(&h, &sends(&a)[0].1).payload else {
        panic!("not an observation");
    };
    assert_eq!(
        o.commitments[0].commitments, spare,
        "the observation used the precomputed set"
    );
    assert!(
        h.nodes[1].spare_commitments().is_none(),
        "moved into the round"
    );
    // The next set differs (fresh randomness), and a second call keeps it.
    h.nodes[1].precompute(&mut h.rng);
    let next = h.nodes[1].spare_commitments().unwrap();
    assert_ne!(next, spare);
    h.nodes[1].precompute(&mut h.rng);
    assert_eq!(h.nodes[1].spare_commitments(), Some(next));
}

#[test]
fn a_signer_with_unparsable_commitments_is_passed_over() {
    let mut h = harness::<Ed>(4, 1);
    let mut to_leader = Vec::new();
    for m in 2..=4 {
        let a = h.handle(m, T0, observations(1_000_000 + i128::from(m), T0));
        let (_, bytes) = sends(&a).remove(0);
        let bytes = if m == 2 {
            // Member 2 signs an observation whose commitments are no points.
            let msg = decode(&h, &bytes);
            let Payload::Observation(mut o) = msg.payload else {
                panic!("not an observation")
            };
            o.commitments = vec![SuiteCommitments {
                suite: Suite::Ed25519,
                commitments: vec![vec![0xff; 69]; h.committee.attempts()],
            }];
            let key = SigningKey::from_bytes(&h.seeds[1]);
            SignedMessage::sign(&key, &DIGEST, msg.round, 2, Payload::Observation(o)).bytes
        } else {
            bytes
        };
        to_leader.push(bytes);
    }
    let mut out = h.handle(1, T0, observations(1_000_001, T0));
    for bytes in to_leader {
        out.extend(h.handle(1, T0 + 1, Input::Message { from: 0, bytes }));
    }
    let to: BTreeSet<u16> = signer_proposals(&h, &out)
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(to, BTreeSet::from([3, 4]), "member 2 is not asked to sign");
    assert!(h.nodes[0].stats().invalid_messages >= 1);
    // Its observation still counts: the report aggregates all four.
    let (_, bytes) = signer_proposals(&h, &out).remove(0);
    let Payload::Proposal(p) = decode(&h, &bytes).payload else {
        panic!("not a proposal")
    };
    assert_eq!(p.leaves[0].num_observations, 4);
}

/// A signer takes only the signing package frost would write for the
/// announced commitments: reordered, repeated, padded or retargeted packages
/// are refused before any point is parsed, and the genuine one still signs.
#[test]
fn a_signer_refuses_any_other_framing_of_the_signing_package() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[1].clone();
    let Payload::Proposal(genuine) = decode(&h, &bytes).payload else {
        panic!("not a proposal");
    };
    let pkg = genuine.signing_packages[0].package.clone();
    let entry = 32 + 69;
    let start = pkg.len() - 33 - 3 * entry;
    let entries: Vec<Vec<u8>> = (0..3)
        .map(|i| pkg[start + i * entry..start + (i + 1) * entry].to_vec())
        .collect();
    let with = |k: u8, list: &[&Vec<u8>], tail: &[u8]| {
        let mut b = pkg[..start - 1].to_vec();
        b.push(k);
        for e in list {
            b.extend_from_slice(e);
        }
        b.extend_from_slice(tail);
        b
    };
    let tail = pkg[pkg.len() - 33..].to_vec();
    let mut other_digest = tail.clone();
    other_digest[5] ^= 1;
    let variants = [
        with(3, &[&entries[1], &entries[0], &entries[2]], &tail),
        with(
            4,
            &[&entries[0], &entries[1], &entries[1], &entries[2]],
            &tail,
        ),
        with(
            3,
            &[&entries[0], &entries[1], &entries[2]],
            &[&tail[..], &[0]].concat(),
        ),
        with(3, &[&entries[0], &entries[1], &entries[2]], &other_digest),
        with(2, &[&entries[0], &entries[1]], &tail),
    ];
    assert_eq!(
        with(3, &[&entries[0], &entries[1], &entries[2]], &tail),
        pkg
    );
    for (i, v) in variants.into_iter().enumerate() {
        let forged = forge(&h, &bytes, |p| p.signing_packages[0].package = v);
        let a = h.handle(
            to,
            T0 + 2,
            Input::Message {
                from: 1,
                bytes: forged,
            },
        );
        assert!(
            a.iter().all(|a| !matches!(a, Action::RecordSigning { .. })),
            "variant {i} was taken"
        );
        assert_eq!(
            h.nodes[usize::from(to) - 1].stats().proposals_refused,
            i as u64 + 1
        );
    }
    let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
    assert!(a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
}

/// Commitments parsed ahead from a hint serve exactly the announced bytes:
/// a signer that was warmed signs as one that was not, a hint that does not
/// parse or comes from itself is refused, and a stale or wrong hint changes
/// nothing (the announced bytes are parsed as usual).
#[test]
fn commitment_hints_are_used_only_for_the_same_bytes() {
    for poisoned in [false, true] {
        let mut h = harness::<Ed>(4, 1);
        for i in 1..=4u16 {
            h.nodes[usize::from(i) - 1].precompute(&mut h.rng);
        }
        let hints: Vec<(u16, Vec<u8>)> = (1..=4u16)
            .map(|i| {
                (
                    i,
                    h.nodes[usize::from(i) - 1]
                        .next_commitments()
                        .unwrap()
                        .to_vec(),
                )
            })
            .collect();
        let (to, _) = (2u16, ());
        let signer = &mut h.nodes[usize::from(to) - 1];
        assert!(!signer.warm_commitments(to, &hints[1].1), "its own");
        assert!(
            !signer.warm_commitments(3, &hint(&[vec![0xff; 69]])),
            "does not parse"
        );
        assert!(!signer.warm_commitments(3, &[0xff; 69]), "not a hint");
        for (from, bytes) in &hints {
            if *from != to {
                let bytes = if poisoned {
                    // Valid commitments, but not the ones that will be announced.
                    let mut other = harness::<Ed>(4, 1);
                    other.nodes[0].precompute(&mut other.rng);
                    other.nodes[0].next_commitments().unwrap().to_vec()
                } else {
                    bytes.clone()
                };
                assert!(signer.warm_commitments(*from, &bytes));
            }
        }
        let proposals = up_to_proposals(&mut h);
        let (to, bytes) = proposals
            .iter()
            .find(|(t, _)| *t == to)
            .cloned()
            .expect("a proposal for member 2");
        let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
        assert!(
            a.iter().any(|a| matches!(a, Action::RecordSigning { .. })),
            "poisoned = {poisoned}"
        );
        assert_eq!(h.nodes[usize::from(to) - 1].stats().proposals_refused, 0);
    }
}

#[test]
fn a_report_reaching_the_driver_another_way_ends_the_round() {
    let mut h = harness::<Ed>(4, 1);
    // Round 0 among members 1-3; member 4 observes but hears nothing (its
    // link from the leader is stalled).
    let mut queue: VecDeque<(u16, Input)> = (1..=4)
        .map(|m| (m, observations(1_000_000 + i128::from(m), T0)))
        .collect();
    let mut report = None;
    while let Some((to, input)) = queue.pop_front() {
        for action in h.handle(to, T0 + 1, input) {
            match action {
                Action::Send { to: d, bytes } if d != 4 => {
                    queue.push_back((d, Input::Message { from: to, bytes }))
                }
                Action::Broadcast { bytes } => {
                    for d in (1..=3).filter(|d| *d != to) {
                        queue.push_back((
                            d,
                            Input::Message {
                                from: to,
                                bytes: bytes.clone(),
                            },
                        ));
                    }
                }
                Action::RecordSigning { round, digest } => {
                    queue.push_back((to, Input::SigningRecorded { round, digest }))
                }
                Action::SignedReport(r) if to == 1 => report = Some(r),
                _ => {}
            }
        }
    }
    let report = report.expect("members 1-3 sign round 0");
    assert_eq!(h.nodes[3].stats().reports_accepted, 0);
    // A forged copy (one leaf changed) does not end the round.
    let mut forged = report.clone();
    forged.leaves[0].price += 1;
    let a = h.handle(4, T0 + 50, Input::StoredReports(vec![forged]));
    assert!(!a.iter().any(|a| matches!(a, Action::SignedReport(_))));
    // The genuine report (from gossip or catch-up, verified by the driver) does.
    let a = h.handle(4, T0 + 60, Input::StoredReports(vec![report.clone()]));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::SignedReport(r) if r == &report)),
        "the round machine holds the round's report"
    );
    assert_eq!(h.nodes[3].stats().reports_accepted, 1);
    // and it moves to round 1 at the next slot, not at round 0's timeout
    let slot = next_slot(T0 + 61, Timeouts::default().round_interval_ms);
    let a = h.handle(4, slot, Input::Tick);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::RoundEntered { round: 1, .. })),
        "{a:?}"
    );
}

#[test]
fn a_signer_holding_the_report_hands_it_to_a_leader_that_hedges() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let picked: Vec<u16> = proposals.iter().map(|(to, _)| *to).collect();
    assert_eq!(picked, vec![2, 3]);
    let is_share = |h: &Harness, b: &Vec<u8>| matches!(decode(h, b).payload, Payload::Share(_));
    let share_of = |h: &mut Harness, to: u16, bytes: &[u8]| {
        let (round, digest) = proposal_to_record(h, to, bytes);
        let a = h.handle(to, T0 + 2, Input::SigningRecorded { round, digest });
        sends(&a)
            .into_iter()
            .map(|(_, b)| b)
            .find(|b| is_share(h, b))
            .expect("a share")
    };
    let share2 = share_of(&mut h, 2, &proposals[0].1);
    let share3 = share_of(&mut h, 3, &proposals[1].1);
    let a = leader_records(&mut h, T0 + 2);
    let share1 = sends(&a)
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| is_share(&h, b))
        .expect("the leader's share");
    // Every share reaches member 3, which assembles the report; member 2's
    // share to the leader is stuck behind a lost packet.
    let mut held = Vec::new();
    for (from, bytes) in [(1, share1), (2, share2)] {
        held.extend(h.handle(3, T0 + 3, Input::Message { from, bytes }));
    }
    assert!(held.iter().any(|a| matches!(a, Action::SignedReport(_))));
    h.handle(
        1,
        T0 + 3,
        Input::Message {
            from: 3,
            bytes: share3,
        },
    );
    // The leader hedges: attempt 1 with members 3 and 4.
    let hedge = h.nodes[0].hedge_delay();
    let a = h.handle(1, T0 + 1 + hedge, Input::Tick);
    let next = signer_proposals(&h, &a);
    assert_eq!(
        next.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // Member 3 holds the report: it does not sign again, it hands the
    // leader the report, once.
    let a = h.handle(
        3,
        T0 + hedge + 2,
        Input::Message {
            from: 1,
            bytes: next[0].1.clone(),
        },
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    let back = sends(&a);
    assert_eq!(back.len(), 1, "{a:?}");
    assert_eq!(back[0].0, 1, "to the leader");
    assert!(matches!(decode(&h, &back[0].1).payload, Payload::Report(_)));
    assert_eq!(h.nodes[2].stats().reports_returned, 1);
    let again = h.handle(
        3,
        T0 + hedge + 2,
        Input::Message {
            from: 1,
            bytes: next[0].1.clone(),
        },
    );
    assert!(sends(&again).is_empty(), "once per round");
    // The leader holds the report then, before member 2's share arrives.
    let a = h.handle(
        1,
        T0 + hedge + 3,
        Input::Message {
            from: 3,
            bytes: back[0].1.clone(),
        },
    );
    let report = signed_report(&a).expect("the leader holds the report");
    assert!(h.nodes[1].verify_report(&report));
    assert_eq!(report.header.round, 0);
    // and sends it to every member, as when its own attempt completes:
    // member 4 (a follower of attempt 0, a signer of the hedge) may hold
    // nothing yet.
    let out = sends(&a);
    assert_eq!(out.len(), 1, "{a:?}");
    assert_eq!(out[0].0, 0, "a broadcast");
    assert!(matches!(decode(&h, &out[0].1).payload, Payload::Report(r) if r == report));
}

#[test]
fn a_follower_that_sees_the_shares_but_not_the_report_asks_the_signers() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let picked: Vec<u16> = proposals.iter().map(|(to, _)| *to).collect();
    assert_eq!(picked, vec![2, 3]);
    let is_share = |h: &Harness, b: &Vec<u8>| matches!(decode(h, b).payload, Payload::Share(_));
    let mut shares = Vec::new();
    for (to, bytes) in &proposals {
        let (round, digest) = proposal_to_record(&mut h, *to, bytes);
        let a = h.handle(*to, T0 + 2, Input::SigningRecorded { round, digest });
        shares.extend(
            sends(&a)
                .into_iter()
                .map(|(_, b)| b)
                .filter(|b| is_share(&h, b)),
        );
    }
    assert_eq!(shares.len(), 2);
    // Member 4 follows the round; its link from the leader is stuck (no
    // proposal copy, no leader share). The signers' shares come, 27 ms apart.
    let a = h.handle(
        4,
        T0 + 3,
        Input::Message {
            from: 2,
            bytes: shares[0].clone(),
        },
    );
    assert!(asks(&a).is_empty());
    let a = h.handle(
        4,
        T0 + 30,
        Input::Message {
            from: 3,
            bytes: shares[1].clone(),
        },
    );
    assert!(
        asks(&a).is_empty(),
        "t - 1 shares besides the leader's: not yet"
    );
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::WakeAt(at) if *at == T0 + 30 + 13)),
        "a wake for the ask, half the shares' spread later: {a:?}"
    );
    let a = h.handle(4, T0 + 42, Input::Tick);
    assert!(asks(&a).is_empty());
    let a = h.handle(4, T0 + 43, Input::Tick);
    assert_eq!(asks(&a), vec![(0, vec![3, 2])], "the latest signer first");
    assert_eq!(h.nodes[3].stats().reports_asked, 1);
    // The answer comes back as a stored report: the round ends there.
    let mut out = leader_records(&mut h, T0 + 3);
    for (from, bytes) in [(2, shares[0].clone()), (3, shares[1].clone())] {
        out.extend(h.handle(1, T0 + 31, Input::Message { from, bytes }));
    }
    let report = signed_report(&out).expect("the leader signs the report");
    assert!(asks(&out).is_empty(), "the leader hedges; it never asks");
    let a = h.handle(4, T0 + 60, Input::StoredReports(vec![report]));
    assert!(a.iter().any(|a| matches!(a, Action::SignedReport(_))));
    let a = h.handle(4, T0 + 200, Input::Tick);
    assert!(asks(&a).is_empty(), "nothing more to ask once held");
    assert_eq!(h.nodes[3].stats().reports_asked, 1);
}

/// A member that holds all shares of an attempt but one (here a follower:
/// member 3's share to it is stuck, everyone else has it) asks for the
/// report after the other shares' spread (at least 10 ms), without
/// waiting for `t - 1` shares besides the leader's.
#[test]
fn a_member_missing_one_share_of_an_attempt_asks_for_the_report() {
    let mut h = harness::<Ed>(4, 1);
    let out = round0_leader_actions(&mut h);
    let is_share = |h: &Harness, b: &Vec<u8>| matches!(decode(h, b).payload, Payload::Share(_));
    let copy = sends(&out)
        .into_iter()
        .find(|(_, b)| {
            matches!(decode(&h, b).payload, Payload::Proposal(_)) && !is_signer_proposal(&h, b)
        })
        .map(|(_, b)| b)
        .expect("the follower's copy");
    let mut shares = Vec::new();
    for (to, bytes) in signer_proposals(&h, &out) {
        let (round, digest) = proposal_to_record(&mut h, to, &bytes);
        let a = h.handle(to, T0 + 2, Input::SigningRecorded { round, digest });
        let share = sends(&a)
            .into_iter()
            .map(|(_, b)| b)
            .find(|b| is_share(&h, b));
        shares.push((to, share.expect("a share")));
    }
    let leader_share = sends(&leader_records(&mut h, T0 + 2))
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| is_share(&h, b))
        .expect("the leader's share");
    h.handle(
        4,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: copy,
        },
    );
    h.handle(
        4,
        T0 + 3,
        Input::Message {
            from: 1,
            bytes: leader_share,
        },
    );
    let (from, bytes) = shares[0].clone();
    assert_eq!(from, 2);
    let a = h.handle(4, T0 + 30, Input::Message { from, bytes });
    assert!(asks(&a).is_empty(), "not at once");
    assert!(asks(&h.handle(4, T0 + 39, Input::Tick)).is_empty());
    let a = h.handle(4, T0 + 40, Input::Tick);
    assert_eq!(asks(&a), vec![(0, vec![2])]);
    assert_eq!(h.nodes[3].stats().reports_asked, 1);
}

#[test]
fn a_slow_signer_gets_one_hedge_attempt_and_no_blame() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let picked: Vec<u16> = proposals.iter().map(|(to, _)| *to).collect();
    assert_eq!(picked, vec![2, 3]);
    // Member 3 signs attempt 0; member 2 is slow (its proposal or share is
    // stuck behind a lost packet) and says nothing.
    let (round, digest) = proposal_to_record(&mut h, 3, &proposals[1].1);
    let a = h.handle(3, T0 + 2, Input::SigningRecorded { round, digest });
    let share3: Vec<u8> = sends(&a)
        .into_iter()
        .find(|(_, b)| matches!(decode(&h, b).payload, Payload::Share(_)))
        .map(|(_, b)| b)
        .expect("member 3's share");
    let mut out = leader_records(&mut h, T0 + 2);
    out.extend(h.handle(
        1,
        T0 + 3,
        Input::Message {
            from: 3,
            bytes: share3,
        },
    ));
    assert!(!out.iter().any(|a| matches!(a, Action::SignedReport(_))));
    // No share round trip seen yet: the hedge waits half of share_ms.
    let hedge = Timeouts::default().share_ms / 2;
    assert_eq!(h.nodes[0].hedge_delay(), hedge);
    let a = h.handle(1, T0 + 1 + hedge - 1, Input::Tick);
    assert!(
        signer_proposals(&h, &a).is_empty(),
        "no hedge before its time"
    );
    let a = h.handle(1, T0 + 1 + hedge, Input::Tick);
    let next = signer_proposals(&h, &a);
    let leader_share1: Vec<Vec<u8>> = sends(&a)
        .into_iter()
        .filter(|(_, b)| matches!(decode(&h, b).payload, Payload::Share(_)))
        .map(|(_, b)| b)
        .collect();
    let to: Vec<u16> = next.iter().map(|(to, _)| *to).collect();
    assert_eq!(
        to,
        vec![3, 4],
        "the hedge passes over the member that has not answered"
    );
    let Payload::Proposal(p) = decode(&h, &next[0].1).payload else {
        panic!("not a proposal");
    };
    assert_eq!(p.attempt, 1);
    let stats = h.nodes[0].stats();
    assert_eq!(
        (
            stats.attempts_hedged,
            stats.attempts_timed_out,
            stats.attempts_started
        ),
        (1, 0, 2)
    );
    assert_eq!(
        h.nodes[0].penalty.get(&2).copied().unwrap_or(0),
        0,
        "a hedge blames nobody"
    );
    // One hedge per round with n = 4 (a second would take the last of the
    // three attempts): nothing more until attempt 0's share_ms deadline.
    let a = h.handle(1, T0 + 1 + 2 * hedge - 1, Input::Tick);
    assert!(signer_proposals(&h, &a).is_empty(), "a second hedge");
    // Members 3 and 4 sign attempt 1 (member 3 recorded this round's digest
    // for attempt 0 already: it signs at once); with the leader's share it
    // completes.
    let mut shares = Vec::new();
    let mut share4 = Vec::new();
    let is_share = |h: &Harness, b: &Vec<u8>| matches!(decode(h, b).payload, Payload::Share(_));
    for (to, bytes) in next {
        let mut a = h.handle(to, T0 + hedge + 2, Input::Message { from: 1, bytes });
        if let Some(Action::RecordSigning { round, digest }) = a.first().cloned() {
            a = h.handle(to, T0 + hedge + 2, Input::SigningRecorded { round, digest });
        }
        let mine: Vec<Vec<u8>> = sends(&a)
            .into_iter()
            .filter(|(_, b)| is_share(&h, b))
            .map(|(_, b)| b)
            .collect();
        if to == 4 {
            share4 = mine.clone();
        }
        shares.extend(mine);
    }
    // Member 3 (a signer of both attempts) assembles the hedge's report
    // from the leader's and member 4's shares and sends it to member 2,
    // whose share of attempt 0 never came: its link from the leader is
    // likely stuck, so the leader's copy would be late too.
    let mut at3 = Vec::new();
    for bytes in leader_share1.iter().take(1).chain(share4.iter().take(1)) {
        let bytes = bytes.clone();
        at3.extend(h.handle(3, T0 + hedge + 3, Input::Message { from: 1, bytes }));
    }
    assert!(
        signed_report(&at3).is_some(),
        "member 3 assembles the report"
    );
    let pushed: Vec<u16> = sends(&at3)
        .into_iter()
        .filter(|(_, b)| matches!(decode(&h, b).payload, Payload::Report(_)))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(pushed, vec![2], "the report goes to the stuck signer only");
    assert_eq!(h.nodes[2].stats().reports_pushed, 1);
    // The leader recorded this round's digest for attempt 0: its own share
    // of attempt 1 needs no second ledger write.
    assert!(h.nodes[0].pending.is_empty());
    let mut out = Vec::new();
    for bytes in shares {
        out.extend(h.handle(1, T0 + hedge + 3, Input::Message { from: 3, bytes }));
    }
    let report = signed_report(&out).expect("the hedge attempt signs the report");
    assert!(h.nodes[2].verify_report(&report));
    // The leader now knows its share round trip and hedges after 5/4 of it.
    let rtt = *h.nodes[0].share_rtts.back().expect("a round trip seen");
    assert_eq!(h.nodes[0].hedge_delay(), (rtt * 5 / 4 + 2).clamp(2, hedge));
    // The median of the last rounds: one slow round does not move it.
    h.nodes[0].share_rtts = [50, 52, 51, 400, 49].into();
    assert_eq!(h.nodes[0].hedge_delay(), (hedge).min(51 * 5 / 4 + 2));
}

/// A signer whose link from the leader is stuck gets the proposal and the
/// leader's share relayed by another signer once its share alone is
/// missing: it signs, holds the report itself, and ignores the leader's own
/// copy when that comes.
#[test]
fn a_signer_relays_the_proposal_to_the_one_signer_whose_share_is_missing() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    let picked: Vec<u16> = proposals.iter().map(|(to, _)| *to).collect();
    assert_eq!(picked, vec![2, 3]);
    let is_share = |h: &Harness, b: &Vec<u8>| matches!(decode(h, b).payload, Payload::Share(_));
    // Member 3 signs at T0 + 2; member 2's proposal is stuck.
    let (round, digest) = proposal_to_record(&mut h, 3, &proposals[1].1);
    let a = h.handle(3, T0 + 2, Input::SigningRecorded { round, digest });
    let share3: Vec<u8> = sends(&a)
        .into_iter()
        .find(|(_, b)| is_share(&h, b))
        .map(|(_, b)| b)
        .expect("member 3's share");
    // It reaches member 2 (that link is fine) before any proposal does.
    h.handle(
        2,
        T0 + 3,
        Input::Message {
            from: 3,
            bytes: share3,
        },
    );
    let a = leader_records(&mut h, T0 + 2);
    let leader_share: Vec<u8> = sends(&a)
        .into_iter()
        .find(|(_, b)| is_share(&h, b))
        .map(|(_, b)| b)
        .expect("the leader's share");
    let a = h.handle(
        3,
        T0 + 3,
        Input::Message {
            from: 1,
            bytes: leader_share,
        },
    );
    assert!(sends(&a).is_empty(), "nothing relayed at once");
    // Member 3 waits as long again as the shares took, at least 10 ms.
    assert!(sends(&h.handle(3, T0 + 12, Input::Tick)).is_empty());
    let a = h.handle(3, T0 + 13, Input::Tick);
    let relayed = sends(&a);
    assert_eq!(relayed.len(), 2, "the proposal and the leader's share");
    assert!(relayed.iter().all(|(to, _)| *to == 2));
    assert!(is_signer_proposal(&h, &relayed[0].1));
    assert_eq!(relayed[0].1, proposals[0].1, "the leader's own bytes");
    assert!(is_share(&h, &relayed[1].1));
    assert_eq!(h.nodes[2].stats().proposals_relayed, 1);
    // Member 2 signs the relayed proposal and, with both relayed and
    // member 3's share, holds the report.
    let mut at2 = Vec::new();
    for (_, bytes) in relayed {
        at2.extend(h.handle(2, T0 + 40, Input::Message { from: 3, bytes }));
    }
    let Some(Action::RecordSigning { round, digest }) = at2.first().cloned() else {
        panic!("member 2 signs the relayed proposal: {at2:?}");
    };
    // The leader's own copy comes while member 2's ledger write is under
    // way: recognised and ignored (signing it again would refuse a used
    // nonce to the leader).
    let late = h.handle(
        2,
        T0 + 40,
        Input::Message {
            from: 1,
            bytes: proposals[0].1.clone(),
        },
    );
    assert!(late.is_empty(), "{late:?}");
    let at2 = h.handle(2, T0 + 41, Input::SigningRecorded { round, digest });
    assert_eq!(shares(&h, &at2), 1, "member 2's share to every member");
    let report = signed_report(&at2).expect("member 2 holds the report");
    assert!(h.nodes[0].verify_report(&report));
    assert_eq!(h.nodes[1].stats().proposals_duplicate, 1);
}

/// With n = 7 (four attempts) a hedge that is itself late gets a second
/// one, then no more; a round that has shown a fault gets no second hedge.
#[test]
fn a_late_hedge_gets_a_second_hedge_while_attempts_are_spare() {
    for fault_seen in [false, true] {
        let mut h = harness::<Ed>(7, 2);
        h.nodes[0].share_rtts = [40, 40, 40].into();
        let hedge = h.nodes[0].hedge_delay();
        assert_eq!(hedge, 40 * 5 / 4 + 2);
        let first = up_to_proposals(&mut h);
        assert_eq!(first.len(), 4, "leader plus four signers of t = 5");
        // Nobody answers: the shares are stuck.
        let a = h.handle(1, T0 + 1 + hedge, Input::Tick);
        let hedge1 = signer_proposals(&h, &a);
        assert!(!hedge1.is_empty(), "the first hedge");
        if fault_seen {
            // A member found unusable this round (as after an invalid share).
            let l = h.nodes[0].rs.leader.as_mut().expect("leading");
            l.excluded.insert(7);
        }
        let a = h.handle(1, T0 + 1 + 2 * hedge - 1, Input::Tick);
        assert!(
            signer_proposals(&h, &a).is_empty(),
            "no hedge before its time"
        );
        let a = h.handle(1, T0 + 1 + 2 * hedge, Input::Tick);
        let hedge2 = signer_proposals(&h, &a);
        if fault_seen {
            assert!(hedge2.is_empty(), "a second hedge after a fault");
            assert_eq!(h.nodes[0].stats().attempts_hedged, 1);
            continue;
        }
        let Payload::Proposal(p) = decode(&h, &hedge2[0].1).payload else {
            panic!("not a proposal");
        };
        assert_eq!(p.attempt, 2, "the second hedge");
        let a = h.handle(1, T0 + 1 + 3 * hedge + 5, Input::Tick);
        assert!(signer_proposals(&h, &a).is_empty(), "a third hedge");
        let stats = h.nodes[0].stats();
        assert_eq!(
            (
                stats.attempts_hedged,
                stats.attempts_timed_out,
                stats.attempts_started
            ),
            (2, 0, 3)
        );
        assert!(h.nodes[0].penalty.is_empty(), "a hedge blames nobody");
    }
}

#[test]
fn a_signed_refusal_makes_the_leader_start_another_attempt_at_once() {
    let mut h = harness::<Ed>(4, 1);
    let proposals = up_to_proposals(&mut h);
    // Leader 1 signs first, then the members after it: 2 and 3.
    let picked: Vec<u16> = proposals.iter().map(|(to, _)| *to).collect();
    assert_eq!(picked, vec![2, 3]);
    // Member 2 refuses (it would not sign anything).
    h.nodes[1].faults.refuse = true;
    let a = h.handle(
        2,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: proposals[0].1.clone(),
        },
    );
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Other]);
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    let (_, refusal) = sends(&a).remove(0);
    // The leader does not wait for share_ms: the refusal starts attempt 1
    // with member 4 in member 2's place.
    let a = h.handle(
        1,
        T0 + 3,
        Input::Message {
            from: 2,
            bytes: refusal,
        },
    );
    let next = signer_proposals(&h, &a);
    let to: Vec<u16> = next.iter().map(|(to, _)| *to).collect();
    assert_eq!(to, vec![3, 4]);
    let Payload::Proposal(p) = decode(&h, &next[0].1).payload else {
        panic!("not a proposal");
    };
    assert_eq!(p.attempt, 1);
    let stats = h.nodes[0].stats();
    assert_eq!((stats.refusals_received, stats.attempts_started), (1, 2));
    assert_eq!(h.nodes[0].member_stats()[&2].refusals, 1);
    // Members 3 and 4 sign attempt 1; with the leader's share it completes.
    let mut shares = Vec::new();
    for (to, bytes) in next {
        let (round, digest) = proposal_to_record(&mut h, to, &bytes);
        let a = h.handle(to, T0 + 4, Input::SigningRecorded { round, digest });
        shares.extend(sends(&a).into_iter().map(|(_, b)| b));
    }
    let mut out = leader_records(&mut h, T0 + 4);
    for bytes in shares {
        out.extend(h.handle(1, T0 + 5, Input::Message { from: 3, bytes }));
    }
    let report = signed_report(&out).expect("attempt 1 signs the report");
    assert!(h.nodes[2].verify_report(&report));
    assert!(h.nodes[0].member_stats()[&3].shares_received >= 1);
    // Member 2 is remembered: the next round member 1 leads picks it last.
    assert!(h.nodes[0].penalty.get(&2).copied().unwrap_or(0) > 0);
}

#[test]
fn a_member_far_ahead_estimates_its_offset_and_stops_offering_then_corrects() {
    let mut c = Clock::default();
    // f = 1: one sample is not enough for anything.
    c.samples.insert(2, 30_000);
    c.recompute(1, 2_000);
    assert_eq!((c.estimate, c.offset, c.doubtful), (None, 0, false));
    // Two samples (f + 1) that agree: a robust correction.
    c.samples.insert(3, 30_040);
    c.recompute(1, 2_000);
    assert_eq!(c.estimate, Some(30_000));
    assert_eq!(c.offset, 30_000);
    assert!(!c.doubtful);
    // Two that disagree (one may lie): no correction, but both say the
    // clock is beyond the skew bound, so the member observes only.
    c.samples.insert(3, 9_000);
    c.recompute(1, 2_000);
    assert_eq!(c.offset, 0);
    assert!(c.doubtful);
    // 2f + 1 samples: the median, whatever one liar says.
    c.samples.insert(4, 30_020);
    c.recompute(1, 2_000);
    assert_eq!(c.offset, 30_000);
    // An NTP-synced member (offsets of a few ms of message delay) never corrects.
    let mut c = Clock::default();
    for (m, s) in [(2, 12), (3, 40), (4, -3)] {
        c.samples.insert(m, s);
    }
    c.recompute(1, 2_000);
    assert_eq!((c.estimate, c.offset, c.doubtful), (Some(12), 0, false));
}

#[test]
fn refusal_messages_decode_and_bad_reasons_are_typed_errors() {
    let h = harness::<Ed>(4, 1);
    let key = SigningKey::from_bytes(&h.seeds[1]);
    let msg = SignedMessage::sign(
        &key,
        &DIGEST,
        7,
        2,
        Payload::Refusal(RefusalMsg {
            attempt: 1,
            report_digest: [4; 32],
            reason: RefusalReason::Ledger,
            clock_ms: T0,
        }),
    );
    assert_eq!(
        SignedMessage::decode(&msg.bytes, &h.committee).unwrap(),
        msg
    );
    // The reason byte sits right before the clock and the signature.
    let at = msg.bytes.len() - 64 - 8 - 1;
    for bad in [0u8, 8, 255] {
        let mut b = msg.bytes.clone();
        b[at] = bad;
        assert!(matches!(
            SignedMessage::decode(&b, &h.committee),
            Err(MessageError::Decode(_))
        ));
    }
}

#[test]
fn a_round_whose_leader_is_unreachable_is_skipped_unless_this_member_is_isolated() {
    let mut h = harness::<Ed>(4, 1);
    assert_eq!(h.committee.leader(0), 1);
    let entered = |a: &[Action]| -> Vec<Round> {
        a.iter()
            .filter_map(|a| match a {
                Action::RoundEntered { round, .. } => Some(*round),
                _ => None,
            })
            .collect()
    };
    // Member 2 reaches 2 and 4 besides itself (2f + 1 = 3): round 0's leader
    // is down, so it moves to round 1 at once instead of after round_ms.
    let a = h.handle(2, T0, Input::Unreachable(vec![1]));
    assert_eq!(entered(&a), vec![0, 1], "{a:?}");
    assert_eq!(h.nodes[1].round(), 1);
    assert_eq!(h.nodes[1].stats().rounds_skipped_unreachable, 1);
    // No observation went to the unreachable leader of round 0; round 1's
    // leader (reachable) gets one.
    let to: Vec<u16> = sends(&a).iter().map(|(to, _)| *to).collect();
    assert!(!to.contains(&1), "{to:?}");
    // Member 3 reaches nobody: it skips nothing (it would run ahead of the
    // committee) and keeps round 0 until the ordinary timeout.
    let a = h.handle(3, T0, Input::Unreachable(vec![1, 2, 4]));
    assert_eq!(entered(&a), vec![0]);
    assert_eq!(h.nodes[2].round(), 0);
    let a = h.handle(3, T0 + h.committee.timeouts().round_ms, Input::Tick);
    assert_eq!(entered(&a), vec![1]);
    assert_eq!(h.nodes[2].stats().rounds_skipped_unreachable, 0);
}

/// A leader waits for the observations of members not heard from (for
/// `observe_ms`, and a little longer with fewer than t in good standing),
/// but not for a member it cannot reach: with exactly t reachable (a 3/1
/// split) that wait cost every round it led.
#[test]
fn a_leader_does_not_wait_for_the_observation_of_an_unreachable_member() {
    let leads_at_once = |unreachable: Vec<u16>| {
        let mut h = harness::<Ed>(4, 1);
        // Member 2 failed member 1 before (a remembered silence).
        h.nodes[0].penalty.insert(2, 4);
        if !unreachable.is_empty() {
            h.handle(1, T0, Input::Unreachable(unreachable));
        }
        let mut to_leader = Vec::new();
        for m in 2..=3 {
            let a = h.handle(m, T0, observations(1_000_000 + i128::from(m), T0));
            to_leader.extend(sends(&a));
        }
        let mut out = h.handle(1, T0, observations(1_000_001, T0));
        for (_, bytes) in to_leader {
            out.extend(h.handle(1, T0 + 1, Input::Message { from: 0, bytes }));
        }
        let out = sends(&out);
        out.iter().any(|(_, b)| is_signer_proposal(&h, b))
    };
    // Member 4 reachable: the leader waits for its observation (it may be
    // a signer in good standing).
    assert!(!leads_at_once(vec![]));
    // Member 4 unreachable: nothing to wait for; 1, 2 and 3 sign now.
    assert!(leads_at_once(vec![4]));
}

/// Hands `to` every message of `msgs` at `at`; returns its actions.
fn deliver<'a>(
    h: &mut Harness,
    to: u16,
    at: TimestampMs,
    msgs: impl IntoIterator<Item = &'a Vec<u8>>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for bytes in msgs {
        out.extend(h.handle(
            to,
            at,
            Input::Message {
                from: 0,
                bytes: bytes.clone(),
            },
        ));
    }
    out
}

/// The signed-report message among `actions` (the leader's broadcast).
fn report_message(h: &Harness, actions: &[Action]) -> Vec<u8> {
    sends(actions)
        .into_iter()
        .find(|(_, b)| matches!(decode(h, b).payload, Payload::Report(_)))
        .map(|(_, b)| b)
        .expect("the leader broadcasts the report")
}

/// The signed report of `actions`, if any.
fn signed_report(actions: &[Action]) -> Option<SignedReport> {
    actions.iter().find_map(|a| match a {
        Action::SignedReport(r) => Some(r.clone()),
        _ => None,
    })
}

/// Every member assembles the report from the shares the signers send to
/// all, without waiting for the leader's copy: a signer (member 2) and the
/// follower (member 4, which got the proposal without observations), the
/// latter even when the shares come before the proposal.
#[test]
fn every_member_assembles_the_report_from_the_broadcast_shares() {
    let mut h = harness::<Ed>(4, 1);
    let out = round0_leader_actions(&mut h);
    let all = sends(&out);
    let to_signers = signer_proposals(&h, &out);
    let signers: Vec<u16> = to_signers.iter().map(|(to, _)| *to).collect();
    assert_eq!(signers, vec![2, 3]);
    let (_, follower_copy) = all
        .iter()
        .find(|(to, b)| *to == 4 && !is_signer_proposal(&h, b))
        .cloned()
        .expect("the follower gets a copy of the proposal");
    let Payload::Proposal(p) = decode(&h, &follower_copy).payload else {
        panic!("not a proposal");
    };
    assert!(p.observations.is_empty() && p.signer_observations.is_empty());
    assert!(follower_copy.len() < to_signers[0].1.len());
    // The leader's own share.
    let mut leader_out = leader_records(&mut h, T0 + 2);
    let mut shares: Vec<Vec<u8>> = sends(&leader_out)
        .into_iter()
        .filter(|(to, b)| *to == 0 && matches!(decode(&h, b).payload, Payload::Share(_)))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(shares.len(), 1, "the leader broadcasts its share too");
    // Member 2 and 3 sign; their shares go to everyone (a broadcast).
    let mut member2_out = Vec::new();
    for (to, bytes) in to_signers {
        let (round, digest) = proposal_to_record(&mut h, to, &bytes);
        let a = h.handle(to, T0 + 3, Input::SigningRecorded { round, digest });
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 0, "a share is broadcast");
        shares.push(s[0].1.clone());
        if to == 2 {
            member2_out.extend(a);
        }
    }
    // The follower sees every share first, then the proposal.
    let mut follower_out = deliver(&mut h, 4, T0 + 4, &shares);
    assert!(signed_report(&follower_out).is_none());
    follower_out.extend(deliver(&mut h, 4, T0 + 5, [&follower_copy]));
    let from_follower = signed_report(&follower_out).expect("the follower assembles the report");
    // Member 2 has its own share; it needs the leader's and member 3's.
    member2_out.extend(deliver(&mut h, 2, T0 + 5, [&shares[0], &shares[2]]));
    let from_signer = signed_report(&member2_out).expect("a signer assembles the report");
    leader_out.extend(deliver(&mut h, 1, T0 + 5, &shares[1..]));
    let from_leader = signed_report(&leader_out).expect("the leader aggregates");
    assert_eq!(from_follower, from_leader);
    assert_eq!(from_signer, from_leader);
    assert!(h.nodes[3].verify_report(&from_follower));
    assert_eq!(h.nodes[3].stats().reports_assembled, 1);
    assert_eq!(h.nodes[1].stats().reports_assembled, 1);
    // The leader's copy that follows is a duplicate, not a second report.
    let report_msg = report_message(&h, &leader_out);
    let a = deliver(&mut h, 4, T0 + 6, [&report_msg]);
    assert!(signed_report(&a).is_none());
}

/// A share that does not add up leaves the follower waiting for the
/// leader's report (which it then accepts); it never accepts a bad one.
#[test]
fn a_follower_given_a_bad_share_waits_for_the_leaders_report() {
    let mut h = harness::<Ed>(4, 1);
    let out = round0_leader_actions(&mut h);
    let follower_copy = sends(&out)
        .into_iter()
        .find(|(to, b)| *to == 4 && !is_signer_proposal(&h, b))
        .map(|(_, b)| b)
        .unwrap();
    let leader_out = leader_records(&mut h, T0 + 2);
    let mut shares: Vec<Vec<u8>> = sends(&leader_out).into_iter().map(|(_, b)| b).collect();
    for (to, bytes) in signer_proposals(&h, &out) {
        let (round, digest) = proposal_to_record(&mut h, to, &bytes);
        let a = h.handle(to, T0 + 3, Input::SigningRecorded { round, digest });
        shares.extend(sends(&a).into_iter().map(|(_, b)| b));
    }
    assert_eq!(shares.len(), 3);
    // Member 3's share, re-signed by member 3 with its scalar changed.
    let msg = decode(&h, &shares[2]);
    let Payload::Share(mut s) = msg.payload else {
        panic!("not a share")
    };
    s.shares[0].share[0] ^= 1;
    let key = SigningKey::from_bytes(&h.seeds[2]);
    let bad = SignedMessage::sign(&key, &DIGEST, msg.round, 3, Payload::Share(s)).bytes;
    let mut follower_out = deliver(&mut h, 4, T0 + 4, [&follower_copy]);
    follower_out.extend(deliver(&mut h, 4, T0 + 5, [&shares[0], &shares[1], &bad]));
    assert!(signed_report(&follower_out).is_none());
    assert_eq!(h.nodes[3].stats().reports_assembled, 0);
    // The genuine share arrives too late for the failed attempt; the
    // leader's report is what completes the round for the follower.
    let leader_out = deliver(&mut h, 1, T0 + 5, &shares[1..]);
    let report_msg = report_message(&h, &leader_out);
    let a = deliver(&mut h, 4, T0 + 6, [&report_msg]);
    assert!(signed_report(&a).is_some());
}

/// A report stored from catch-up hands its leaves to the round machine as
/// the feeds' last values (the next leaf's EMA starts there), but never
/// rewinds a newer one.
#[test]
fn caught_up_reports_become_the_feeds_last_values() {
    let mut h = harness::<Ed>(4, 1);
    let report = |round: Round, ts: TimestampMs, price: Price| SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: DIGEST,
            round,
            timestamp_ms: ts,
            merkle_root: [0; 32],
            margin_root: [0; 32],
        },
        leaves: vec![ReportLeaf {
            ema: price - 1,
            volatility: 7,
            ..ReportLeaf::basic(feed(0), price, 2, 3, ts - 10)
        }],
        signatures: BTreeMap::new(),
        commands: Vec::new(),
        margin_state: None,
    };
    let newer = report(5, T0 + 5_000, 500);
    h.handle(2, T0, Input::StoredReports(vec![newer.clone()]));
    let want = LastValue::of_leaf(&newer.leaves[0], T0 + 5_000);
    assert_eq!(h.nodes[1].last_values()[&feed(0)], want);
    h.handle(
        2,
        T0,
        Input::StoredReports(vec![report(4, T0 + 4_000, 400)]),
    );
    assert_eq!(
        h.nodes[1].last_values()[&feed(0)],
        want,
        "an older report does not rewind it"
    );
}

/// A committee listing both suites signs each round once, with both: every
/// member holds the same report, carrying one signature per suite, each
/// valid under its suite's group key; the ledger records one digest.
#[test]
fn a_committee_with_both_suites_signs_every_report_with_both() {
    for (n, f) in [(4, 1), (7, 2)] {
        let (mut h, keys) = harness_both(n, f);
        assert_eq!(
            h.nodes[0].suites(),
            vec![Suite::Ed25519, Suite::Secp256k1Evm]
        );
        let (reports, evidence) = run_until_quiet(&mut h, T0, 1_000_000);
        assert!(evidence.is_empty(), "{evidence:?}");
        let first = reports[0].first().expect("member 1 holds a report").clone();
        assert_eq!(first.signatures.len(), 2);
        crate::verify::verify_report(&first, &keys).expect("both signatures verify");
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.len(), 1, "member {} holds one report", i + 1);
            assert_eq!(r[0], first, "member {} holds the same report", i + 1);
        }
        // One ledger entry per round, whatever the number of suites.
        let digest = report_digest(&first.header);
        for node in &h.nodes {
            if let Some(l) = node.last_signed() {
                assert_eq!(l, SigningRecord { round: 0, digest });
            }
        }
        let signed = h.nodes.iter().filter(|n| n.last_signed().is_some()).count();
        assert_eq!(signed, usize::from(2 * f + 1));
        // Either signature alone is checked: a report missing one, or with
        // one corrupted, is refused by every member.
        for tamper in 0..2 {
            let mut bad = first.clone();
            bad.header.round = 1;
            if tamper == 0 {
                bad.signatures.remove(&Suite::Secp256k1Evm);
            } else if let Some(s) = bad.signatures.get_mut(&Suite::Ed25519) {
                s.0[10] ^= 1;
            }
            assert!(!h.nodes[1].verify_report(&bad));
        }
    }
}

/// With both suites, every proposal carries one package per suite over the
/// same signers, every share message one share per suite, and each
/// observation commitments of both suites for every attempt.
#[test]
fn messages_of_a_both_suite_round_carry_every_suite() {
    let (mut h, _) = harness_both(4, 1);
    let a = h.handle(2, T0, observations(1_000_000, T0));
    let Payload::Observation(o) = decode(&h, &sends(&a)[0].1).payload else {
        panic!("not an observation");
    };
    let suites: Vec<Suite> = o.commitments.iter().map(|c| c.suite).collect();
    assert_eq!(suites, vec![Suite::Ed25519, Suite::Secp256k1Evm]);
    assert!(
        o.commitments
            .iter()
            .all(|c| c.commitments.len() == h.committee.attempts())
    );
    let (mut h, _) = harness_both(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[0].clone();
    let Payload::Proposal(p) = decode(&h, &bytes).payload else {
        panic!("not a proposal");
    };
    assert_eq!(p.signing_packages.len(), 2);
    let (_, digest) = proposal_to_record(&mut h, to, &bytes);
    let a = h.handle(to, T0 + 3, Input::SigningRecorded { round: 0, digest });
    let share = sends(&a)
        .into_iter()
        .find_map(|(_, b)| match decode(&h, &b).payload {
            Payload::Share(s) => Some(s),
            _ => None,
        })
        .expect("a share message");
    let suites: Vec<Suite> = share.shares.iter().map(|s| s.suite).collect();
    assert_eq!(suites, vec![Suite::Ed25519, Suite::Secp256k1Evm]);
    for (s, pkg) in share.shares.iter().zip(&p.signing_packages) {
        assert_eq!(s.package_hash, keccak(&pkg.package));
    }
    // The same proposal again signs nothing: neither suite's nonce signs
    // twice.
    let again = h.handle(to, T0 + 4, Input::Message { from: 1, bytes });
    assert_eq!(shares(&h, &again), 0);
}

/// A signer that leaves out one suite's package, or sends packages naming
/// different signers per suite, is refused; a member whose observation
/// offers one suite only is not picked as a signer.
#[test]
fn both_suite_proposals_missing_a_suite_are_refused() {
    let (mut h, _) = harness_both(4, 1);
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[0].clone();
    let forged = forge(&h, &bytes, |p| {
        p.signing_packages.pop();
    });
    let a = h.handle(
        to,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: forged,
        },
    );
    assert!(a.iter().all(|a| !matches!(a, Action::RecordSigning { .. })));
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Package]);

    let (mut h, _) = harness_both(4, 1);
    let mut to_leader = Vec::new();
    for m in 2..=4 {
        let a = h.handle(m, T0, observations(1_000_000 + i128::from(m), T0));
        let (_, bytes) = sends(&a).remove(0);
        let bytes = if m == 2 {
            let msg = decode(&h, &bytes);
            let Payload::Observation(mut o) = msg.payload else {
                panic!("not an observation")
            };
            o.commitments.truncate(1);
            let key = SigningKey::from_bytes(&h.seeds[1]);
            SignedMessage::sign(&key, &DIGEST, msg.round, 2, Payload::Observation(o)).bytes
        } else {
            bytes
        };
        to_leader.push(bytes);
    }
    let mut out = h.handle(1, T0, observations(1_000_001, T0));
    for bytes in to_leader {
        out.extend(h.handle(1, T0 + 1, Input::Message { from: 0, bytes }));
    }
    // An incomplete offer is no observation the leader takes: it proposes
    // with the other three once `observe_ms` passed.
    assert!(h.nodes[0].stats().invalid_messages >= 1);
    let later = T0 + h.committee.timeouts().observe_ms + 1;
    out.extend(h.handle(1, later, Input::Tick));
    let to: BTreeSet<u16> = signer_proposals(&h, &out)
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(to, BTreeSet::from([3, 4]), "member 2 is not asked to sign");
}

/// An invalid share in either suite is evidence that verifies against that
/// suite's keys, and the leader retries without the culprit.
#[test]
fn an_invalid_share_in_a_both_suite_round_is_evidence() {
    let (mut h, keys) = harness_both(4, 1);
    h.nodes[1].faults.invalid_shares = true;
    let (reports, evidence) = run_until_quiet(&mut h, T0, 1_000_000);
    assert!(!evidence.is_empty(), "member 2 is blamed");
    for ev in &evidence {
        assert_eq!(h.nodes[0].verify_evidence(ev), Ok(2));
    }
    let r = reports[0].first().expect("the retry signs");
    crate::verify::verify_report(r, &keys).expect("both signatures verify");
}

#[test]
fn node_new_wants_one_key_set_per_suite() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let h = harness::<Ed>(4, 1);
    let ed = dealer_keys::<Ed, _>(4, 3, &mut rng).unwrap();
    let id = Identifier::<Ed>::try_from(1u16).unwrap();
    let none = NodeKeySet::new(h.seeds[0]);
    assert!(matches!(
        Node::new(h.committee.clone(), 1, none, Restore::default()),
        Err(NodeError::NoSuite)
    ));
    let twice = NodeKeySet::new(h.seeds[0])
        .with(ed.key_packages[&id].clone(), ed.public_key_package.clone())
        .with(ed.key_packages[&id].clone(), ed.public_key_package.clone());
    assert!(matches!(
        Node::new(h.committee.clone(), 1, twice, Restore::default()),
        Err(NodeError::DuplicateSuite(Suite::Ed25519))
    ));
}

/// Trusted-dealer refresh of every member's keys of suite `C` (tests only;
/// the committee refreshes with the DKG, `crate::dkg`).
fn refreshed<C: SibylSuite>(
    h: &Harness,
    rng: &mut ChaCha20Rng,
) -> BTreeMap<u16, (KeyPackage<C>, PublicKeyPackage<C>)> {
    let old = h.nodes[0].public_key_package::<C>().unwrap().clone();
    let ids: Vec<Identifier<C>> = (1..=h.nodes.len() as u16)
        .map(|i| Identifier::try_from(i).unwrap())
        .collect();
    let (shares, public) =
        frost_core::keys::refresh::compute_refreshing_shares(old, &ids, rng).unwrap();
    ids.iter()
        .zip(shares)
        .map(|(id, share)| {
            let i = h.committee.members()[ids.iter().position(|x| x == id).unwrap()].index;
            let lane = h.nodes[usize::from(i) - 1]
                .lanes
                .iter()
                .find_map(|l| l.get::<C>())
                .unwrap();
            let kp =
                frost_core::keys::refresh::refresh_share(share, lane.lead_key_package()).unwrap();
            (i, (kp, public.clone()))
        })
        .collect()
}

/// Runs round `k` (from its slot) until quiet; returns member 1's report.
fn sign_round(h: &mut Harness, k: u64, price: Price) -> Option<SignedReport> {
    let interval = h.committee.timeouts().round_interval_ms;
    let at = T0 + k * interval;
    let queue = (1..=h.nodes.len() as u16)
        .flat_map(|m| {
            [
                (m, observations(price + i128::from(m), at)),
                (m, Input::Tick),
            ]
        })
        .collect();
    let (reports, _) = deliver_until_quiet(h, at, queue);
    reports[0].last().cloned()
}

/// A proactive refresh inside a running committee: members hold the old
/// and the new key set at once, each proposal names the set its attempt
/// signs with, a signer that lacks it refuses, and every report verifies
/// under the unchanged group keys, before, during and after the switch.
#[test]
fn a_refreshed_key_set_signs_beside_the_old_one_then_alone() {
    let (mut h, keys) = harness_both(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let old = h.nodes[0].key_set();
    let r0 = sign_round(&mut h, 0, 1_000_000).expect("round 0 signs");
    crate::verify::verify_report(&r0, &keys).unwrap();

    let ed = refreshed::<Ed>(&h, &mut rng);
    let evm = refreshed::<Evm>(&h, &mut rng);
    let mut new = None;
    // Member 3 has not finished the refresh yet: it holds only the old set.
    for i in [1u16, 2, 4] {
        let suites = vec![
            SuiteKeys::new(ed[&i].0.clone(), ed[&i].1.clone()),
            SuiteKeys::new(evm[&i].0.clone(), evm[&i].1.clone()),
        ];
        let id = h.nodes[usize::from(i) - 1].add_key_set(suites).unwrap();
        assert!(new.is_none_or(|n| n == id), "one id for one refresh");
        new = Some(id);
    }
    let new = new.unwrap();
    assert_ne!(new, old);
    assert_eq!(h.nodes[0].key_sets(), {
        let mut v = vec![old, new];
        v.sort_unstable();
        v
    });
    // Member 2 leads round 1 with the new set: member 3 cannot sign it,
    // members 1, 2 and 4 (t = 3) can.
    assert!(h.nodes[1].lead_with(new));
    assert!(!h.nodes[2].lead_with(new), "member 3 does not hold it");
    let before = h.nodes[2].stats().refusals_sent;
    let r1 = sign_round(&mut h, 1, 1_000_100).expect("round 1 signs with the new set");
    crate::verify::verify_report(&r1, &keys).unwrap();
    assert_eq!(r1.header.round, 1);
    assert!(
        h.nodes[2].stats().refusals_sent > before,
        "member 3 refused a proposal naming a set it lacks"
    );
    // Round 2 is led by member 3 with the old set, which everyone holds.
    let r2 = sign_round(&mut h, 2, 1_000_200).expect("round 2 signs with the old set");
    crate::verify::verify_report(&r2, &keys).unwrap();

    // Member 3 finishes; everyone switches and erases the old shares.
    let suites = vec![
        SuiteKeys::new(ed[&3].0.clone(), ed[&3].1.clone()),
        SuiteKeys::new(evm[&3].0.clone(), evm[&3].1.clone()),
    ];
    assert_eq!(h.nodes[2].add_key_set(suites).unwrap(), new);
    for node in &mut h.nodes {
        assert!(node.lead_with(new));
        node.retire_key_set(old);
        assert_eq!(node.key_sets(), vec![new]);
        assert_eq!(node.key_set(), new);
    }
    for k in 3..7 {
        let r = sign_round(&mut h, k, 1_000_000 + 100 * k as i128)
            .unwrap_or_else(|| panic!("round {k} signs with the new set alone"));
        crate::verify::verify_report(&r, &keys).unwrap();
        assert_eq!(r.header.round, k);
    }
    // The old set is gone: new shares of another group are refused.
    let other = harness::<Ed>(4, 1);
    let wrong = other.nodes[0]
        .lanes
        .iter()
        .find_map(|l| l.get::<Ed>())
        .unwrap();
    let suites = vec![
        SuiteKeys::new(wrong.lead_key_package().clone(), wrong.pubkeys().clone()),
        SuiteKeys::new(evm[&1].0.clone(), evm[&1].1.clone()),
    ];
    assert!(matches!(
        h.nodes[0].add_key_set(suites),
        Err(NodeError::GroupKeyMismatch(Suite::Ed25519))
    ));
    let only_ed = vec![SuiteKeys::new(ed[&1].0.clone(), ed[&1].1.clone())];
    assert!(matches!(
        h.nodes[0].add_key_set(only_ed),
        Err(NodeError::KeySetSuites)
    ));
}

fn offer(origin: u16, nonce: u64, body: &str) -> MarginCommand {
    MarginCommand {
        origin,
        nonce,
        body: body.to_string(),
    }
}

/// Members 2 and 3 offer margin commands (member 3 also one in member 2's
/// name, which is not its to offer): the round's report carries the
/// offers of the observations the leader aggregated, ascending by origin
/// and nonce, each once, and every member holds the same report.
#[test]
fn a_round_orders_the_members_offered_commands_into_its_report() {
    let mut h = harness::<Ed>(4, 1);
    h.handle(
        2,
        T0,
        Input::OfferCommands(vec![offer(2, 9, "b"), offer(2, 5, "a")]),
    );
    h.handle(
        3,
        T0,
        Input::OfferCommands(vec![offer(3, 1, "c"), offer(2, 6, "forged")]),
    );
    let (reports, evidence) = run_until_quiet(&mut h, T0, 1_000_000);
    assert!(evidence.is_empty(), "{evidence:?}");
    let first = &reports[0][0];
    let expected = vec![offer(2, 5, "a"), offer(2, 9, "b"), offer(3, 1, "c")];
    assert_eq!(first.commands, expected);
    assert_eq!(
        first.header.margin_root,
        crate::digest::commands_root(&expected)
    );
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.first(), Some(first), "member {}", i + 1);
    }
    let keys_ok = h.nodes[1].verify_report(first);
    assert!(keys_ok);
    // A report whose commands were edited after signing is not accepted.
    let mut edited = first.clone();
    edited.commands[0].body = "z".into();
    assert!(!h.nodes[1].verify_report(&edited));
}

/// A leader that adds, drops or reorders commands, or edits one, is
/// refused as a mismatch by the signers (who recompute the order from the
/// attributed observations), even with the header's root matching.
#[test]
fn signers_refuse_a_proposal_whose_commands_are_not_the_observations_offers() {
    // (edit, whether it still decodes: commands out of order do not)
    type Edit = fn(&mut ProposalMsg);
    let edits: [(Edit, bool); 4] = [
        (|p| p.commands.insert(0, offer(1, 1, "invented")), true),
        (
            |p| {
                p.commands.pop();
            },
            true,
        ),
        (|p| p.commands[0].body = "edited".into(), true),
        (|p| p.commands.reverse(), false),
    ];
    for (i, (edit, decodes)) in edits.into_iter().enumerate() {
        let mut h = harness::<Ed>(4, 1);
        for m in 2..=4 {
            h.handle(
                m,
                T0,
                Input::OfferCommands(vec![offer(m, 1, "x"), offer(m, 2, "y")]),
            );
        }
        let proposals = up_to_proposals(&mut h);
        let (to, bytes) = proposals[1].clone();
        let honest = decode(&h, &bytes);
        let Payload::Proposal(p) = &honest.payload else {
            panic!("not a proposal");
        };
        assert!(!p.commands.is_empty(), "the leader ordered the offers");
        let forged = forge(&h, &bytes, edit);
        let a = h.handle(
            to,
            T0 + 2,
            Input::Message {
                from: 1,
                bytes: forged,
            },
        );
        assert!(
            !a.iter().any(|a| matches!(a, Action::RecordSigning { .. })),
            "edit {i}"
        );
        let node = &h.nodes[usize::from(to) - 1];
        if decodes {
            assert_eq!(refusals(&h, &a), vec![RefusalReason::Mismatch], "edit {i}");
            assert_eq!(node.stats().proposals_refused, 1, "edit {i}");
        } else {
            assert!(a.is_empty(), "edit {i}: {a:?}");
            assert_eq!(node.stats().invalid_messages, 1, "edit {i}");
        }
    }
}

fn checkpoint(round: Round, b: u8) -> MarginCheckpoint {
    MarginCheckpoint {
        round,
        root: [b; 32],
    }
}

#[test]
fn the_leader_carries_the_newest_margin_state_t_members_attested() {
    let a = [checkpoint(5, 1), checkpoint(6, 1)];
    let b = [checkpoint(5, 1), checkpoint(6, 1), checkpoint(7, 1)];
    let c = [checkpoint(5, 1), checkpoint(6, 2)];
    let lists = [(1, &a[..]), (2, &b[..]), (3, &c[..])];
    // Round 7: one attester; round 6: two with root 1, one with root 2.
    let (chosen, disagree) = choose_margin_state(lists, 2, None);
    let (state, who) = chosen.unwrap();
    assert_eq!(state, checkpoint(6, 1));
    assert_eq!(who, [1, 2].into_iter().collect());
    assert!(disagree, "round 6 has two roots");
    // With t = 3 only round 5 has enough.
    let (chosen, _) = choose_margin_state(lists, 3, None);
    assert_eq!(chosen.unwrap().0, checkpoint(5, 1));
    // Nothing at or before the last carried round again.
    let (chosen, _) = choose_margin_state(lists, 3, Some(5));
    assert_eq!(chosen, None);
    let (chosen, disagree) = choose_margin_state(lists, 2, Some(6));
    assert_eq!(chosen, None);
    assert!(!disagree);
}

/// Members attest margin state roots; the report carries the newest one
/// every member offering to sign attested alike (so any of them can sign,
/// as without one), and a member refuses a proposal carrying a root it did
/// not attest.
#[test]
fn a_report_carries_a_margin_state_every_offering_member_attested() {
    let mut h = harness::<Ed>(4, 1);
    for m in 1..=3 {
        h.handle(
            m,
            T0,
            Input::AttestMarginRoots(vec![checkpoint(3, 9), checkpoint(4, 9)]),
        );
    }
    // Member 4's engine differs at round 4.
    h.handle(
        4,
        T0,
        Input::AttestMarginRoots(vec![checkpoint(3, 9), checkpoint(4, 8)]),
    );
    let proposals = up_to_proposals(&mut h);
    let (to, bytes) = proposals[0].clone();
    let m = decode(&h, &bytes);
    let Payload::Proposal(p) = &m.payload else {
        panic!("not a proposal");
    };
    assert_eq!(
        p.margin_state,
        Some(checkpoint(3, 9)),
        "round 4 is not unanimous"
    );
    assert_eq!(h.nodes[0].stats().margin_root_disagreements, 1);
    assert_eq!(h.nodes[0].stats().margin_states_proposed, 1);
    // A leader carrying round 4's root anyway: member 4 refuses it.
    let forged = forge(&h, &bytes, |p| p.margin_state = Some(checkpoint(4, 9)));
    let a = h.handle(
        4,
        T0 + 2,
        Input::Message {
            from: 1,
            bytes: forged,
        },
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
    assert_eq!(refusals(&h, &a), vec![RefusalReason::Mismatch]);
    assert_eq!(h.nodes[3].stats().margin_states_refused, 1);
    // The honest signer signs the honest proposal.
    let a = h.handle(to, T0 + 2, Input::Message { from: 1, bytes });
    assert!(a.iter().any(|a| matches!(a, Action::RecordSigning { .. })));
}

/// A whole round with every member attesting the same state: every member
/// holds a report carrying it, and its header's margin root binds it.
#[test]
fn a_signed_report_binds_its_margin_state() {
    let mut h = harness::<Ed>(4, 1);
    for m in 1..=4 {
        h.handle(m, T0, Input::AttestMarginRoots(vec![checkpoint(2, 7)]));
    }
    h.handle(2, T0, Input::OfferCommands(vec![offer(2, 1, "a")]));
    let (reports, _) = run_until_quiet(&mut h, T0, 1_000_000);
    let r = &reports[0][0];
    assert_eq!(r.margin_state, Some(checkpoint(2, 7)));
    assert_eq!(
        r.header.margin_root,
        crate::digest::margin_root(&r.commands, r.margin_state.as_ref())
    );
    assert!(h.nodes[1].verify_report(r));
    let mut other = r.clone();
    other.margin_state = Some(checkpoint(2, 6));
    assert!(!h.nodes[1].verify_report(&other), "a changed root");
    let mut none = r.clone();
    none.margin_state = None;
    assert!(!h.nodes[1].verify_report(&none), "a dropped root");
}
