use super::ceremony::{Round1Seen, check_echo};
use super::wire::sha3;
use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::VecDeque;

fn keys(n: u16) -> BTreeMap<u16, ed25519_dalek::SigningKey> {
    (1..=n)
        .map(|i| (i, ed25519_dalek::SigningKey::from_bytes(&[i as u8; 32])))
        .collect()
}

fn machines(n: u16, t: u16, suites: &[Suite]) -> BTreeMap<u16, Dkg> {
    let keys = keys(n);
    let members: BTreeMap<u16, VerifyingKey> =
        keys.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    keys.iter()
        .map(|(&i, k)| {
            let config = DkgConfig {
                digest: ConfigDigest([5; 32]),
                threshold: t,
                me: i,
                members: members.clone(),
                suites: suites.to_vec(),
                timeout_ms: 60_000,
                total_timeout_ms: None,
                resend_interval_ms: 1_000,
            };
            (i, Dkg::new(config, Box::new(k.clone())).expect("config"))
        })
        .collect()
}

/// Deliver every message at once, in sending order; returns each member's
/// result.
fn run_instantly(
    machines: &mut BTreeMap<u16, Dkg>,
    rngs: &mut BTreeMap<u16, ChaCha20Rng>,
) -> BTreeMap<u16, Result<Box<DkgResult>, DkgError>> {
    run_holding(machines, rngs, &|_, _| false)
}

/// As [`run_instantly`], but a message `(to, bytes)` that `hold` picks is
/// delivered only when no other message is waiting.
fn run_holding(
    machines: &mut BTreeMap<u16, Dkg>,
    rngs: &mut BTreeMap<u16, ChaCha20Rng>,
    hold: &dyn Fn(u16, &[u8]) -> bool,
) -> BTreeMap<u16, Result<Box<DkgResult>, DkgError>> {
    run_logged(machines, rngs, hold, &mut Vec::new())
}

/// As [`run_holding`], logging every delivery `(from, to, bytes)`.
fn run_logged(
    machines: &mut BTreeMap<u16, Dkg>,
    rngs: &mut BTreeMap<u16, ChaCha20Rng>,
    hold: &dyn Fn(u16, &[u8]) -> bool,
    log: &mut Vec<(u16, u16, Vec<u8>)>,
) -> BTreeMap<u16, Result<Box<DkgResult>, DkgError>> {
    let mut queue: VecDeque<(u16, u16, Vec<u8>)> = VecDeque::new();
    let mut results = BTreeMap::new();
    let all: BTreeSet<u16> = machines.keys().copied().collect();
    let mut pending: VecDeque<(u16, Input)> = all
        .iter()
        .map(|&i| {
            let mut connected = all.clone();
            connected.remove(&i);
            (i, Input::Start { connected })
        })
        .collect();
    loop {
        let next = queue
            .iter()
            .position(|(_, to, bytes)| !hold(*to, bytes))
            .or((!queue.is_empty()).then_some(0));
        let Some((i, input)) = pending.pop_front().or_else(|| {
            next.and_then(|k| queue.remove(k)).map(|(from, to, bytes)| {
                log.push((from, to, bytes.clone()));
                (to, Input::Message { from, bytes })
            })
        }) else {
            break;
        };
        let m = machines.get_mut(&i).expect("member");
        for o in m.handle(0, input, rngs.get_mut(&i).expect("rng")) {
            match o {
                Output::Send { to, bytes } => queue.push_back((i, to, bytes)),
                Output::Progress(_) => {}
                Output::Done(r) => {
                    results.insert(i, Ok(r));
                }
                Output::Failed(e) => {
                    results.insert(i, Err(e));
                }
            }
        }
    }
    results
}

/// The machine, driven in memory, reproduces the committed vector that the
/// daemon's ceremony over libp2p recorded (before the DKG moved here):
/// every byte sent, the key packages and the public key packages.
#[test]
fn seeded_ceremony_matches_the_committed_vector() {
    let vector: serde_json::Value =
        serde_json::from_str(include_str!("../../vectors/dkg_vectors.json")).expect("vector");
    let mut ms = machines(4, 3, &[Suite::Ed25519, Suite::Secp256k1Evm]);
    let mut rngs = (1..=4u16)
        .map(|i| (i, ChaCha20Rng::seed_from_u64(u64::from(i))))
        .collect();
    let results = run_instantly(&mut ms, &mut rngs);
    let h = |b: &[u8]| hex::encode(sha3(&[b]));
    let members = vector["members"].as_array().expect("members");
    assert_eq!(members.len(), 4);
    for want in members {
        let i = u16::try_from(want["index"].as_u64().expect("index")).expect("index");
        let r = results[&i].as_ref().expect("ceremony succeeds");
        let mut sent = Vec::new();
        for per_member in ms[&i].sent().values() {
            for msgs in per_member.values() {
                for m in msgs {
                    sent.extend_from_slice(m);
                }
            }
        }
        assert_eq!(want["sent_sha3"], h(&sent), "member {i}: bytes sent");
        let ed = r.ed25519.as_ref().expect("ed25519");
        let evm = r.secp256k1_evm.as_ref().expect("evm");
        for (name, gk, kp, pkp) in [
            (
                "ed25519",
                ed.group_key_hex(),
                ed.key_package.serialize().expect("ser"),
                ed.public_key_package.serialize().expect("ser"),
            ),
            (
                "secp256k1-evm",
                evm.group_key_hex(),
                evm.key_package.serialize().expect("ser"),
                evm.public_key_package.serialize().expect("ser"),
            ),
        ] {
            assert_eq!(want[name]["group_key"], gk, "member {i} {name}");
            assert_eq!(want[name]["key_package_sha3"], h(&kp), "member {i} {name}");
            assert_eq!(
                want[name]["public_key_package_sha3"],
                h(&pkp),
                "member {i} {name}"
            );
        }
    }
}

#[test]
fn stash_holds_at_most_its_cap_per_sender() {
    let mut ms = machines(4, 3, &[Suite::Ed25519]);
    let m = ms.get_mut(&1).expect("member 1");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let connected: BTreeSet<u16> = [2, 3, 4].into();
    m.handle(0, Input::Start { connected }, &mut rng);
    // Member 2 floods messages of 100 sessions this member never runs.
    for k in 0..100u8 {
        let bytes = DkgMessage::Done {
            public_key_package_hash: [k; 32],
        }
        .encode(&[k; 32]);
        let out = m.handle(1, Input::Message { from: 2, bytes }, &mut rng);
        assert!(out.iter().all(|o| !matches!(o, Output::Failed(_))));
    }
    assert_eq!(m.stashed(), STASH_PER_MEMBER);
    assert_eq!(m.stats().stash_dropped, 100 - STASH_PER_MEMBER as u64);
    // Repeats take no slot; member 3's messages still find room.
    let other = DkgMessage::Round2 {
        package: vec![1],
        signature: vec![],
    }
    .encode(&[200; 32]);
    for _ in 0..5 {
        m.handle(
            2,
            Input::Message {
                from: 3,
                bytes: other.clone(),
            },
            &mut rng,
        );
    }
    assert_eq!(m.stashed(), STASH_PER_MEMBER + 1);
}

#[test]
fn next_suite_messages_wait_in_the_stash_and_are_used() {
    // Member 1 gets the ed25519 confirmations last, so members 2..4 finish
    // that suite first and their secp256k1 messages reach member 1 while it
    // is still confirming: they wait in the stash and both suites finish.
    let mut ms = machines(4, 3, &[Suite::Ed25519, Suite::Secp256k1Evm]);
    let mut rngs = (1..=4u16)
        .map(|i| (i, ChaCha20Rng::seed_from_u64(u64::from(i) + 10)))
        .collect();
    let ed = session_id::<Ed>(&ConfigDigest([5; 32]));
    let results = run_holding(&mut ms, &mut rngs, &|to, bytes| {
        to == 1 && matches!(DkgMessage::decode(bytes), Ok((s, DkgMessage::Done { .. })) if s == ed)
    });
    assert_eq!(results.len(), 4);
    for r in results.values() {
        assert_eq!(r.as_ref().expect("done").group_keys().len(), 2);
    }
    assert!(ms[&1].stats().stashed > 0, "{:?}", ms[&1].stats());
    assert!(ms.values().all(|m| m.stashed() == 0));
}

/// A member that connects late holds everything of the first suite in its
/// stash, plus a stray extra message of that suite after its sender's
/// confirmation. Taking the stash in ends the first suite before the stray
/// one: it is left out, not fed to the second suite's ceremony (where it
/// would clash with the sender's real round-2 package and blame it).
#[test]
fn a_stashed_message_of_a_finished_suite_does_not_reach_the_next() {
    let suites = [Suite::Ed25519, Suite::Secp256k1Evm];
    let seeds = |i: u16| ChaCha20Rng::seed_from_u64(u64::from(i) + 20);
    let mut rngs = (1..=4u16).map(|i| (i, seeds(i))).collect();
    let mut log = Vec::new();
    let results = run_logged(
        &mut machines(4, 3, &suites),
        &mut rngs,
        &|_, _| false,
        &mut log,
    );
    assert!(results.values().all(Result::is_ok));
    let ed = session_id::<Ed>(&ConfigDigest([5; 32]));
    let (first, second): (Vec<_>, Vec<_>) = log
        .into_iter()
        .filter(|(_, to, _)| *to == 1)
        .partition(|(_, _, b)| DkgMessage::decode(b).is_ok_and(|(s, _)| s == ed));

    // Replay member 1 with the same seed; it connects only after its inbox
    // of the first suite (and the stray message) arrived.
    let mut m = machines(4, 3, &suites).remove(&1).expect("member 1");
    let mut rng = seeds(1);
    m.handle(
        0,
        Input::Start {
            connected: BTreeSet::new(),
        },
        &mut rng,
    );
    let stray = DkgMessage::Round2 {
        package: vec![0],
        signature: vec![],
    }
    .encode(&ed);
    for (from, _, bytes) in first.into_iter().chain([(2, 1, stray)]) {
        let out = m.handle(1, Input::Message { from, bytes }, &mut rng);
        assert!(out.iter().all(|o| !matches!(o, Output::Failed(_))));
    }
    assert_eq!(m.phase(), Phase::Connect);
    m.handle(2, Input::Connected([2, 3, 4].into()), &mut rng);
    assert_eq!(m.stashed(), 0);
    let mut done = None;
    for (from, _, bytes) in second {
        for o in m.handle(3, Input::Message { from, bytes }, &mut rng) {
            match o {
                Output::Done(r) => done = Some(r),
                Output::Failed(e) => panic!("member 1 failed: {e}"),
                _ => {}
            }
        }
    }
    let done = done.expect("both suites finish");
    assert_eq!(
        done.group_keys(),
        results[&1].as_ref().expect("done").group_keys()
    );
}

/// A total timeout shorter than the per-suite one ends the run at the total
/// deadline (`sibyl dkg --timeout` bounds the command with it), naming the
/// member that never came.
#[test]
fn the_total_timeout_ends_the_run_before_the_per_suite_timeout() {
    let keys = keys(2);
    let members: BTreeMap<u16, VerifyingKey> =
        keys.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let config = DkgConfig {
        digest: ConfigDigest([5; 32]),
        threshold: 2,
        me: 1,
        members,
        suites: vec![Suite::Ed25519, Suite::Secp256k1Evm],
        timeout_ms: 60_000,
        total_timeout_ms: Some(7_000),
        resend_interval_ms: 1_000,
    };
    let mut m = Dkg::new(config, Box::new(keys[&1].clone())).expect("config");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    m.handle(
        1_000,
        Input::Start {
            connected: BTreeSet::new(),
        },
        &mut rng,
    );
    assert!(m.next_wake().is_some_and(|w| w <= 8_000));
    assert!(
        !m.handle(7_999, Input::Tick, &mut rng)
            .iter()
            .any(|o| matches!(o, Output::Failed(_)))
    );
    let out = m.handle(8_000, Input::Tick, &mut rng);
    assert!(
        matches!(out.last(), Some(Output::Failed(DkgError::Timeout { missing, .. })) if missing == &vec![2]),
        "{out:?}"
    );
}

#[test]
fn a_silent_member_times_out_naming_it_and_the_machine_asks_to_be_woken() {
    let mut ms = machines(3, 2, &[Suite::Ed25519]);
    let m = ms.get_mut(&1).expect("member 1");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    m.handle(
        0,
        Input::Start {
            connected: [2].into(),
        },
        &mut rng,
    );
    assert_eq!(m.phase(), Phase::Connect);
    assert_eq!(m.next_wake(), Some(1_000));
    let out = m.handle(60_000, Input::Tick, &mut rng);
    match out.last() {
        Some(Output::Failed(DkgError::Timeout { phase, missing })) => {
            assert_eq!(*phase, Phase::Connect);
            assert_eq!(missing, &vec![3]);
        }
        other => panic!("{other:?}"),
    }
    assert!(m.finished());
    assert_eq!(m.next_wake(), None);
}

#[test]
fn members_we_wait_for_get_our_messages_again_once_per_interval() {
    let mut ms = machines(3, 2, &[Suite::Ed25519]);
    let m = ms.get_mut(&1).expect("member 1");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let out = m.handle(
        0,
        Input::Start {
            connected: [2, 3].into(),
        },
        &mut rng,
    );
    let sends = |o: &[Output]| {
        o.iter()
            .filter(|o| matches!(o, Output::Send { .. }))
            .count()
    };
    assert_eq!(sends(&out), 2, "round 1 to members 2 and 3");
    assert_eq!(sends(&m.handle(500, Input::Tick, &mut rng)), 0);
    assert_eq!(sends(&m.handle(1_000, Input::Tick, &mut rng)), 2);
    assert_eq!(sends(&m.handle(1_500, Input::Tick, &mut rng)), 0);
    assert_eq!(m.stats().resent, 2);
}

#[test]
fn garbage_names_its_sender() {
    let mut ms = machines(3, 2, &[Suite::Ed25519]);
    let m = ms.get_mut(&1).expect("member 1");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    m.handle(
        0,
        Input::Start {
            connected: [2, 3].into(),
        },
        &mut rng,
    );
    let out = m.handle(
        1,
        Input::Message {
            from: 3,
            bytes: b"hello".to_vec(),
        },
        &mut rng,
    );
    match out.last() {
        Some(Output::Failed(e)) => assert_eq!(e.culprit(), Some(3), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_parameters_are_refused() {
    let k = keys(3);
    let members: BTreeMap<u16, VerifyingKey> =
        k.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let config = |t, me| DkgConfig {
        digest: ConfigDigest([0; 32]),
        threshold: t,
        me,
        members: members.clone(),
        suites: vec![Suite::Ed25519],
        timeout_ms: 1,
        total_timeout_ms: None,
        resend_interval_ms: 1,
    };
    assert!(matches!(
        Dkg::new(config(1, 1), Box::new(k[&1].clone())),
        Err(DkgError::Params(_))
    ));
    assert!(matches!(
        Dkg::new(config(4, 1), Box::new(k[&1].clone())),
        Err(DkgError::Params(_))
    ));
    assert!(matches!(
        Dkg::new(config(2, 9), Box::new(k[&1].clone())),
        Err(DkgError::Params(_))
    ));
}

#[test]
fn forged_echo_blames_the_echoer() {
    let k = keys(3);
    let members: BTreeMap<u16, VerifyingKey> =
        k.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let session = [1u8; 32];
    let mut seen = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for i in 1u16..=3 {
        let hash = sha3(&[&[i as u8]]);
        let sig =
            IdentitySigner::sign(&k[&i], &round1_statement(&session, i, &hash)).expect("sign");
        seen.insert(
            i,
            Round1Seen {
                hash,
                signature: sig.clone(),
                package: vec![],
            },
        );
        entries.insert(i, (hash, sig));
    }
    assert!(check_echo(&session, 2, &entries, &seen, &members).is_ok());
    // Member 2 claims member 3 sent something else, without 3's signature.
    let mut forged = entries.clone();
    forged.insert(3, ([9; 32], vec![0; 64]));
    let err = check_echo(&session, 2, &forged, &seen, &members).expect_err("forged");
    assert!(
        matches!(err, DkgError::BadMessage { member: 2, .. }),
        "{err}"
    );
    // An echo that leaves a member out blames the echoer.
    let mut short = entries.clone();
    short.remove(&1);
    let err = check_echo(&session, 3, &short, &seen, &members).expect_err("short");
    assert_eq!(err.culprit(), Some(3));
    // Member 3 really signed a second package: it is named, with proof.
    let hash = [7u8; 32];
    let sig = IdentitySigner::sign(&k[&3], &round1_statement(&session, 3, &hash)).expect("sign");
    let mut two = entries.clone();
    two.insert(3, (hash, sig));
    match check_echo(&session, 2, &two, &seen, &members).expect_err("equivocation") {
        DkgError::Equivocation { member: 3, proof } => {
            assert!(proof.verify(3, &members[&3]));
            assert!(!proof.verify(2, &members[&2]));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn messages_round_trip_and_garbage_is_refused() {
    let session = [7u8; 32];
    let msgs = vec![
        DkgMessage::Nonce { nonce: [3; 32] },
        DkgMessage::Round1 {
            nonces: [(1, [1; 32]), (2, [2; 32])].into(),
            package: vec![1, 2, 3],
            signature: vec![4; 64],
        },
        DkgMessage::Echo {
            entries: [(1, ([2; 32], vec![3; 64])), (2, ([4; 32], vec![5; 64]))]
                .into_iter()
                .collect(),
        },
        DkgMessage::Round2 {
            package: vec![9; 100],
            signature: vec![1; 64],
        },
        DkgMessage::Complaint {
            accused: 3,
            package: vec![9; 100],
            signature: vec![1; 64],
        },
        DkgMessage::Done {
            public_key_package_hash: [8; 32],
        },
    ];
    for m in msgs {
        let bytes = m.encode(&session);
        assert_eq!(DkgMessage::decode(&bytes), Ok((session, m.clone())));
        for cut in 0..bytes.len() {
            assert!(
                DkgMessage::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(DkgMessage::decode(&long).is_err());
    }
    assert!(DkgMessage::decode(b"hello").is_err());
}

/// The replay issue 17 describes: a member echoes, for an honest member, the
/// round-1 statement that member signed in an earlier run of the same
/// committee. The run session (every member's fresh nonce) differs, so the
/// old signature does not verify in this run: the echoer is blamed, never
/// the member it replays.
#[test]
fn an_echo_replaying_an_earlier_run_blames_the_echoer() {
    let k = keys(3);
    let members: BTreeMap<u16, VerifyingKey> =
        k.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let base = [1u8; 32];
    let run_of = |seed: u8| {
        let nonces: RunNonces = (1u16..=3).map(|i| (i, [seed ^ i as u8; 32])).collect();
        run_session(&base, &nonces)
    };
    let (earlier, now) = (run_of(1), run_of(2));
    assert_ne!(earlier, now);
    let mut seen = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for i in 1u16..=3 {
        let hash = sha3(&[&[i as u8]]);
        let sig = IdentitySigner::sign(&k[&i], &round1_statement(&now, i, &hash)).expect("sign");
        seen.insert(
            i,
            Round1Seen {
                hash,
                signature: sig.clone(),
                package: vec![],
            },
        );
        entries.insert(i, (hash, sig));
    }
    let hash = [7u8; 32];
    let old = IdentitySigner::sign(&k[&3], &round1_statement(&earlier, 3, &hash)).expect("sign");
    let mut replayed = entries.clone();
    replayed.insert(3, (hash, old.clone()));
    let err = check_echo(&now, 2, &replayed, &seen, &members).expect_err("replay");
    assert!(
        matches!(err, DkgError::BadMessage { member: 2, .. }),
        "{err}"
    );
    // Within the earlier run the same statements were a real equivocation.
    let mut seen_then = seen.clone();
    let first = sha3(&[&[3u8]]);
    seen_then.insert(
        3,
        Round1Seen {
            hash: first,
            signature: IdentitySigner::sign(&k[&3], &round1_statement(&earlier, 3, &first))
                .expect("sign"),
            package: vec![],
        },
    );
    let err = check_echo(&earlier, 2, &replayed, &seen_then, &members).expect_err("equivocation");
    assert!(
        matches!(err, DkgError::Equivocation { member: 3, .. }),
        "{err}"
    );
}

/// Two runs of the same committee with the same key material but fresh
/// nonces sign different statements: nothing sent in one is accepted in the
/// other.
#[test]
fn two_runs_have_different_run_sessions_and_both_finish() {
    let mut a = machines(4, 3, &[Suite::Ed25519]);
    let mut rngs = (1..=4u16)
        .map(|i| (i, ChaCha20Rng::seed_from_u64(u64::from(i) + 40)))
        .collect();
    let ra = run_instantly(&mut a, &mut rngs);
    let mut b = machines(4, 3, &[Suite::Ed25519]);
    let rb = run_instantly(&mut b, &mut rngs);
    assert!(ra.values().chain(rb.values()).all(Result::is_ok));
    let ka = ra[&1].as_ref().expect("a").group_keys();
    let kb = rb[&1].as_ref().expect("b").group_keys();
    assert_ne!(ka, kb);
    // A round-1 message of run A, delivered to a member of run B that has
    // every nonce of B, is refused as naming other nonces (blames its
    // sender, who is the only one able to send it over the transport).
    let round1_a = a[&2].sent().values().next().expect("session")[&1]
        .iter()
        .find(|m| matches!(DkgMessage::decode(m), Ok((_, DkgMessage::Round1 { .. }))))
        .expect("round 1")
        .clone();
    let mut m = machines(4, 3, &[Suite::Ed25519])
        .remove(&1)
        .expect("member 1");
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    m.handle(
        0,
        Input::Start {
            connected: [2, 3, 4].into(),
        },
        &mut rng,
    );
    for from in 2..=4u16 {
        let bytes = DkgMessage::Nonce {
            nonce: [from as u8; 32],
        }
        .encode(&session_id::<Ed>(&ConfigDigest([5; 32])));
        m.handle(1, Input::Message { from, bytes }, &mut rng);
    }
    assert_eq!(m.phase(), Phase::Round1);
    let out = m.handle(
        2,
        Input::Message {
            from: 2,
            bytes: round1_a,
        },
        &mut rng,
    );
    match out.last() {
        Some(Output::Failed(e)) => assert_eq!(e.culprit(), Some(2), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// Proactive refresh: after a DKG, the same committee refreshes with
/// `Dkg::refresh`. Every member gets a new share of the same group key;
/// `t` new shares sign; `t` old shares still interpolate to the secret
/// (which is why old shares are erased), but `t - 1` old shares plus a new
/// one do not, in any mix: an attacker holding fewer than `t` old shares
/// gains nothing from new ones.
#[test]
fn a_refresh_keeps_the_group_key_and_old_and_new_shares_do_not_mix() {
    let suites = [Suite::Ed25519, Suite::Secp256k1Evm];
    let mut rngs: BTreeMap<u16, ChaCha20Rng> = (1..=4u16)
        .map(|i| (i, ChaCha20Rng::seed_from_u64(u64::from(i) + 60)))
        .collect();
    let old = run_instantly(&mut machines(4, 3, &suites), &mut rngs);
    let old: BTreeMap<u16, Box<DkgResult>> =
        old.into_iter().map(|(i, r)| (i, r.expect("dkg"))).collect();
    let keys = self::keys(4);
    let members: BTreeMap<u16, VerifyingKey> =
        keys.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let mut refreshing: BTreeMap<u16, Dkg> = keys
        .iter()
        .map(|(&i, k)| {
            let r = &old[&i];
            let held = RefreshKeys {
                ed25519: r
                    .ed25519
                    .as_ref()
                    .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
                secp256k1_evm: r
                    .secp256k1_evm
                    .as_ref()
                    .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
            };
            let config = DkgConfig {
                digest: ConfigDigest([5; 32]),
                threshold: 3,
                me: i,
                members: members.clone(),
                suites: suites.to_vec(),
                timeout_ms: 60_000,
                total_timeout_ms: None,
                resend_interval_ms: 1_000,
            };
            (
                i,
                Dkg::refresh(config, Box::new(k.clone()), held).expect("refresh config"),
            )
        })
        .collect();
    let new = run_instantly(&mut refreshing, &mut rngs);
    let new: BTreeMap<u16, Box<DkgResult>> = new
        .into_iter()
        .map(|(i, r)| (i, r.expect("refresh")))
        .collect();
    assert_eq!(new.len(), 4);
    for i in 1..=4u16 {
        assert_eq!(new[&i].group_keys(), old[&1].group_keys(), "member {i}");
        assert_ne!(
            new[&i]
                .ed25519
                .as_ref()
                .expect("ed")
                .key_package
                .signing_share(),
            old[&i]
                .ed25519
                .as_ref()
                .expect("ed")
                .key_package
                .signing_share()
        );
    }
    fn check<C: frost_core::Ciphersuite>(
        old: &[&frost_core::keys::KeyPackage<C>],
        new: &[&frost_core::keys::KeyPackage<C>],
        group: &frost_core::VerifyingKey<C>,
    ) {
        let key_of = |kps: Vec<frost_core::keys::KeyPackage<C>>| {
            frost_core::keys::reconstruct(&kps)
                .map(|k| frost_core::VerifyingKey::from(&k))
                .expect("interpolates")
        };
        let all = |v: &[&frost_core::keys::KeyPackage<C>]| v.iter().map(|k| (*k).clone()).collect();
        assert_eq!(key_of(all(&new[..3])), *group, "t new shares");
        assert_eq!(key_of(all(&old[..3])), *group, "t old shares");
        // Every mix of t - 1 = 2 old shares and one new share of another member.
        for a in 0..4 {
            for b in (a + 1)..4 {
                for c in (0..4).filter(|c| *c != a && *c != b) {
                    let mix = vec![old[a].clone(), old[b].clone(), new[c].clone()];
                    assert_ne!(key_of(mix), *group, "old {a} {b} + new {c}");
                }
            }
        }
    }
    let ed = |r: &BTreeMap<u16, Box<DkgResult>>| -> Vec<_> {
        (1..=4u16)
            .map(|i| r[&i].ed25519.as_ref().expect("ed").key_package.clone())
            .collect()
    };
    let evm = |r: &BTreeMap<u16, Box<DkgResult>>| -> Vec<_> {
        (1..=4u16)
            .map(|i| {
                r[&i]
                    .secp256k1_evm
                    .as_ref()
                    .expect("evm")
                    .key_package
                    .clone()
            })
            .collect()
    };
    let (old_ed, new_ed) = (ed(&old), ed(&new));
    check(
        &old_ed.iter().collect::<Vec<_>>(),
        &new_ed.iter().collect::<Vec<_>>(),
        old[&1]
            .ed25519
            .as_ref()
            .expect("ed")
            .public_key_package
            .verifying_key(),
    );
    let (old_evm, new_evm) = (evm(&old), evm(&new));
    check(
        &old_evm.iter().collect::<Vec<_>>(),
        &new_evm.iter().collect::<Vec<_>>(),
        old[&1]
            .secp256k1_evm
            .as_ref()
            .expect("evm")
            .public_key_package
            .verifying_key(),
    );
    // t new shares produce a FROST signature that verifies under the group key.
    let pkp = &new[&1].ed25519.as_ref().expect("ed").public_key_package;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in &new_ed[..3] {
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let sp = frost_core::SigningPackage::new(commitments, b"refreshed");
    let shares: BTreeMap<_, _> = new_ed[..3]
        .iter()
        .map(|kp| {
            (
                *kp.identifier(),
                frost_core::round2::sign(&sp, &nonces[kp.identifier()], kp).expect("sign"),
            )
        })
        .collect();
    let sig = frost_core::aggregate(&sp, &shares, pkp).expect("aggregate");
    assert!(pkp.verifying_key().verify(b"refreshed", &sig).is_ok());
}

#[test]
fn a_refresh_refuses_keys_that_do_not_fit_the_committee() {
    let mut rngs: BTreeMap<u16, ChaCha20Rng> = (1..=3u16)
        .map(|i| (i, ChaCha20Rng::seed_from_u64(u64::from(i))))
        .collect();
    let old = run_instantly(&mut machines(3, 2, &[Suite::Ed25519]), &mut rngs);
    let r = old[&2].as_ref().expect("dkg");
    let k = keys(3);
    let members: BTreeMap<u16, VerifyingKey> =
        k.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
    let config = |me, t| DkgConfig {
        digest: ConfigDigest([5; 32]),
        threshold: t,
        me,
        members: members.clone(),
        suites: vec![Suite::Ed25519],
        timeout_ms: 1_000,
        total_timeout_ms: None,
        resend_interval_ms: 100,
    };
    let held = RefreshKeys {
        ed25519: r
            .ed25519
            .as_ref()
            .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
        secp256k1_evm: None,
    };
    let start = |mut m: Dkg| {
        let out = m.handle(
            0,
            Input::Start {
                connected: BTreeSet::new(),
            },
            &mut ChaCha20Rng::seed_from_u64(1),
        );
        out.into_iter()
            .any(|o| matches!(o, Output::Failed(DkgError::Params(_))))
    };
    // Member 1 with member 2's key package; a different threshold.
    assert!(start(
        Dkg::refresh(config(1, 2), Box::new(k[&1].clone()), held.clone()).expect("machine")
    ));
    assert!(start(
        Dkg::refresh(config(2, 3), Box::new(k[&2].clone()), held.clone()).expect("machine")
    ));
    // No key of a suite to refresh.
    let mut both = config(2, 2);
    both.suites.push(Suite::Secp256k1Evm);
    assert!(matches!(
        Dkg::refresh(both, Box::new(k[&2].clone()), held),
        Err(DkgError::Params(_))
    ));
}
