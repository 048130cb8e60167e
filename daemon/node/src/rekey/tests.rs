//! The in-node refresh's state machine, four members in memory with the
//! real refresh ceremony: a refresh from one member's request, a member
//! killed in the ceremony, a member restarted with its pending keys, and a
//! "not held" answer.

use super::*;
use frost_core::Identifier;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sibyl_aggregator::ConfigDigest;
use sibyl_aggregator::dkg::DkgConfig;
use sibyl_aggregator::testkit::dealer_keys;
use std::collections::VecDeque;

type Ed = frost_ed25519::Ed25519Sha512;

const N: u16 = 4;
const T: u16 = 3;
const T0: u64 = 1_800_000_000_000;

struct Member {
    rekey: Rekey,
    /// What the round machine was told, in order.
    told: Vec<String>,
    /// Keys written as pending (the "disk").
    pending: Option<RefreshKeys>,
    live: RefreshKeys,
}

struct World {
    members: BTreeMap<u16, Member>,
    identities: BTreeMap<u16, ed25519_dalek::SigningKey>,
    now: u64,
    rng: ChaCha20Rng,
    /// Messages in flight (from, to, bytes).
    wire: VecDeque<(u16, u16, Vec<u8>)>,
    /// Members whose messages are lost both ways (killed).
    down: BTreeSet<u16>,
    timing: Timing,
    /// Disk writes (of pending keys, of the switch) that fail, per member.
    failing_writes: BTreeMap<u16, u32>,
    failing_switches: BTreeMap<u16, u32>,
}

fn factory(me: u16, identities: &BTreeMap<u16, ed25519_dalek::SigningKey>) -> MachineFactory {
    let config = DkgConfig {
        digest: ConfigDigest([5; 32]),
        threshold: T,
        me,
        members: identities
            .iter()
            .map(|(i, k)| (*i, k.verifying_key()))
            .collect(),
        suites: vec![sibyl_aggregator::Suite::Ed25519],
        timeout_ms: 20_000,
        total_timeout_ms: Some(20_000),
        resend_interval_ms: 1_000,
    };
    let key = identities[&me].clone();
    Box::new(move |keys, run| {
        let config = DkgConfig {
            digest: ceremony_digest(&config.digest, &keys, run),
            ..config.clone()
        };
        Dkg::refresh(config, Box::new(key.clone()), keys)
    })
}

impl World {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let dealer = dealer_keys::<Ed, _>(N, T, &mut rng).unwrap();
        let identities: BTreeMap<u16, ed25519_dalek::SigningKey> = (1..=N)
            .map(|i| {
                (
                    i,
                    ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 40; 32]),
                )
            })
            .collect();
        let timing = Timing {
            grace_ms: 5_000,
            ..Timing::default()
        };
        let mut w = Self {
            members: BTreeMap::new(),
            identities,
            now: T0,
            rng,
            wire: VecDeque::new(),
            down: BTreeSet::new(),
            timing,
            failing_writes: BTreeMap::new(),
            failing_switches: BTreeMap::new(),
        };
        for i in 1..=N {
            let id = Identifier::<Ed>::try_from(i).unwrap();
            let live = RefreshKeys {
                ed25519: Some((
                    dealer.key_packages[&id].clone(),
                    dealer.public_key_package.clone(),
                )),
                secp256k1_evm: None,
            };
            w.boot(i, live, None);
        }
        w
    }

    /// (Re)starts member `i` from what it has on disk.
    fn boot(&mut self, i: u16, live: RefreshKeys, pending: Option<RefreshKeys>) {
        let (mut rekey, first) = Rekey::new(
            i,
            1..=N,
            self.timing.clone(),
            factory(i, &self.identities),
            live.clone(),
            pending.clone(),
            self.now,
        );
        let all: BTreeSet<u16> = (1..=N).filter(|m| *m != i).collect();
        let mut out = first;
        out.extend(rekey.handle(self.now, RekeyInput::Connected(all), &mut self.rng));
        self.members.insert(
            i,
            Member {
                rekey,
                told: Vec::new(),
                pending,
                live,
            },
        );
        self.perform(i, out);
    }

    /// Carries out member `i`'s outputs: sends go on the wire, disk writes
    /// succeed at once.
    fn perform(&mut self, i: u16, outputs: Vec<RekeyOutput>) {
        let mut queue = VecDeque::from(outputs);
        while let Some(o) = queue.pop_front() {
            let m = self.members.get_mut(&i).unwrap();
            let follow = match o {
                RekeyOutput::Send { to, bytes } => {
                    self.wire.push_back((i, to, bytes));
                    None
                }
                RekeyOutput::WritePending(keys) => match self.failing_writes.get_mut(&i) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        Some(RekeyInput::Written(Err("No space left on device".into())))
                    }
                    _ => {
                        m.pending = Some(*keys);
                        Some(RekeyInput::Written(Ok(())))
                    }
                },
                RekeyOutput::SwitchToPending => match self.failing_switches.get_mut(&i) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        Some(RekeyInput::Switched(Err("No space left on device".into())))
                    }
                    _ => {
                        m.live = m.pending.take().expect("pending keys to switch to");
                        Some(RekeyInput::Switched(Ok(())))
                    }
                },
                RekeyOutput::AddKeySet(k) => {
                    m.told.push(format!("add {:016x}", key_set_id(&k)));
                    None
                }
                RekeyOutput::LeadWith(s) => {
                    m.told.push(format!("lead {s:016x}"));
                    None
                }
                RekeyOutput::Retire(s) => {
                    m.told.push(format!("retire {s:016x}"));
                    None
                }
                RekeyOutput::Progress(_) => None,
            };
            if let Some(input) = follow {
                let m = self.members.get_mut(&i).unwrap();
                queue.extend(m.rekey.handle(self.now, input, &mut self.rng));
            }
        }
    }

    fn input(&mut self, i: u16, input: RekeyInput) {
        let m = self.members.get_mut(&i).unwrap();
        let out = m.rekey.handle(self.now, input, &mut self.rng);
        self.perform(i, out);
    }

    /// Delivers everything in flight (1 ms per message), then ticks every
    /// member whose timer is due, until `until`.
    fn run_until(&mut self, until: u64) {
        while self.now < until {
            let mut steps = 0;
            while let Some((from, to, bytes)) = self.wire.pop_front() {
                steps += 1;
                assert!(steps < 100_000, "messages do not settle");
                if self.down.contains(&from) || self.down.contains(&to) {
                    continue;
                }
                self.input(to, RekeyInput::Message { from, bytes });
            }
            let next = self
                .members
                .iter()
                .filter(|(i, _)| !self.down.contains(i))
                .filter_map(|(_, m)| m.rekey.next_wake())
                .min()
                .unwrap_or(until)
                .clamp(self.now + 1, until);
            self.now = next;
            let due: Vec<u16> = self
                .members
                .iter()
                .filter(|(i, m)| {
                    !self.down.contains(i) && m.rekey.next_wake().is_some_and(|w| w <= self.now)
                })
                .map(|(i, _)| *i)
                .collect();
            for i in due {
                self.input(i, RekeyInput::Tick);
            }
        }
    }

    /// Delivers messages one at a time (time moves on when none is in
    /// flight) until `done` holds.
    fn deliver_until(&mut self, mut done: impl FnMut(&World) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            match self.wire.pop_front() {
                Some((from, to, bytes)) => self.input(to, RekeyInput::Message { from, bytes }),
                None => {
                    let t = self.now + 100;
                    self.run_until(t);
                }
            }
        }
        panic!("the condition never held");
    }

    fn status(&self, i: u16) -> &RekeyStatus {
        self.members[&i].rekey.status()
    }

    fn group_key(&self, i: u16) -> frost_core::VerifyingKey<Ed> {
        *self.members[&i]
            .live
            .ed25519
            .as_ref()
            .unwrap()
            .1
            .verifying_key()
    }
}

/// `t` members' live shares sign a message that verifies under the group key.
fn live_shares_sign(w: &mut World, signers: &[u16]) -> bool {
    let pkp = w.members[&signers[0]].live.ed25519.clone().unwrap().1;
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for s in signers {
        let kp = &w.members[s].live.ed25519.as_ref().unwrap().0;
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut w.rng);
        nonces.insert(*s, n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost_core::SigningPackage::new(commitments, b"refreshed");
    let mut shares = BTreeMap::new();
    for s in signers {
        let kp = &w.members[s].live.ed25519.as_ref().unwrap().0;
        let share = frost_core::round2::sign(&package, &nonces[s], kp).unwrap();
        shares.insert(*kp.identifier(), share);
    }
    frost_core::aggregate(&package, &shares, &pkp)
        .is_ok_and(|sig| pkp.verifying_key().verify(b"refreshed", &sig).is_ok())
}

#[test]
fn one_request_refreshes_every_member_and_the_group_key_stays() {
    let mut w = World::new();
    let old = w.status(1).key_set.clone();
    let group = w.group_key(1);
    w.input(2, RekeyInput::Start);
    w.run_until(T0 + 3_000);
    let new = w.status(1).key_set.clone();
    assert_ne!(new, old, "a new key set");
    for i in 1..=N {
        let s = w.status(i);
        assert_eq!(s.completed, 1, "member {i}: {s:?}");
        assert_eq!(s.key_set, new, "member {i}: the same set everywhere");
        assert_eq!(s.phase, "idle");
        assert_eq!(
            w.group_key(i),
            group,
            "member {i}: the group key is unchanged"
        );
        // Added, then led with; the old set still held (grace).
        assert_eq!(
            w.members[&i].told,
            vec![format!("add {new}"), format!("lead {new}")],
            "member {i}"
        );
        assert!(w.members[&i].pending.is_none(), "member {i}: switched");
    }
    assert!(live_shares_sign(&mut w, &[1, 3, 4]), "the new shares sign");
    // The grace passes: the old set is erased from memory everywhere.
    w.run_until(T0 + 10_000);
    for i in 1..=N {
        assert_eq!(
            w.members[&i].told.last(),
            Some(&format!("retire {old}")),
            "member {i}"
        );
    }
}

#[test]
fn a_request_soon_after_a_start_is_not_followed() {
    let mut w = World::new();
    w.input(2, RekeyInput::Start);
    w.run_until(T0 + 3_000);
    // Member 3 asks again 4 s after the last start: the others do not
    // follow (min_gap 10 s), so its lone ceremony waits.
    w.input(3, RekeyInput::Start);
    w.run_until(T0 + 4_000);
    assert_eq!(w.status(3).phase, "ceremony", "{:?}", w.status(3));
    for i in [1, 2, 4] {
        assert_eq!(w.status(i).phase, "idle", "member {i}");
        assert_eq!(w.status(i).completed, 1, "member {i}");
    }
}

#[test]
fn a_member_killed_in_the_ceremony_stops_nobody_and_the_retry_finishes() {
    let mut w = World::new();
    let old = w.status(1).key_set.clone();
    w.input(1, RekeyInput::Start);
    // Member 4 dies before anything reaches it.
    w.down.insert(4);
    w.run_until(T0 + 25_000);
    for i in 1..=3 {
        let s = w.status(i).clone();
        assert_eq!(s.completed, 0, "member {i}");
        assert_eq!(s.failed, 1, "member {i}: the ceremony timed out: {s:?}");
        assert_eq!(s.key_set, old, "member {i} still signs with the old set");
        assert!(w.members[&i].told.is_empty(), "member {i}: nothing changed");
        assert!(w.members[&i].pending.is_none());
    }
    // Member 4 restarts (nothing pending); the retry includes it.
    w.down.clear();
    let live = w.members[&4].live.clone();
    w.boot(4, live, None);
    w.run_until(T0 + 60_000);
    let new = w.status(1).key_set.clone();
    assert_ne!(new, old);
    for i in 1..=N {
        assert_eq!(w.status(i).completed, 1, "member {i}: {:?}", w.status(i));
        assert_eq!(w.status(i).key_set, new, "member {i}");
    }
    assert!(live_shares_sign(&mut w, &[2, 3, 4]));
}

#[test]
fn a_member_restarted_with_pending_keys_resumes_and_nobody_switches_without_it() {
    let mut w = World::new();
    let old = w.status(1).key_set.clone();
    w.input(1, RekeyInput::Start);
    // Deliver until every member stored its new keys, then kill member 4
    // before its "stored" reaches anyone.
    w.deliver_until(|w| w.members.values().all(|m| m.pending.is_some()));
    w.down.insert(4);
    w.wire.retain(|(from, _, _)| *from != 4);
    w.run_until(T0 + 20_000);
    for i in 1..=3 {
        let s = w.status(i);
        assert_eq!(s.phase, "stored", "member {i} waits: {s:?}");
        assert_eq!(s.waiting_for, vec![4], "member {i}");
        assert_eq!(s.key_set, old, "member {i}: not switched without member 4");
        assert!(
            w.members[&i].pending.is_some(),
            "member {i} keeps its pending keys"
        );
    }
    // Member 4 comes back with its pending files: every member switches.
    w.down.clear();
    let (live, pending) = {
        let m = &w.members[&4];
        (m.live.clone(), m.pending.clone())
    };
    w.boot(4, live, pending);
    w.run_until(T0 + 25_000);
    let new = w.status(4).key_set.clone();
    assert_ne!(new, old);
    for i in 1..=N {
        assert_eq!(w.status(i).completed, 1, "member {i}: {:?}", w.status(i));
        assert_eq!(w.status(i).key_set, new, "member {i}");
        assert!(w.members[&i].pending.is_none());
    }
    assert!(live_shares_sign(&mut w, &[1, 2, 4]));
}

#[test]
fn not_held_parks_the_stored_set_but_a_contradiction_is_ignored() {
    let mut w = World::new();
    w.input(1, RekeyInput::Start);
    // Members 1-3 store; member 4 is cut off after the ceremony's end.
    w.deliver_until(|w| (1..=3).all(|i| w.members[&i].pending.is_some()));
    w.down.insert(4);
    w.run_until(w.now + 2_000);
    assert_eq!(w.status(1).phase, "stored");
    let hash = outcome_hash(w.members[&1].pending.as_ref().unwrap());
    // Member 2 said "stored": a later "not held" from it is a contradiction.
    w.input(
        1,
        RekeyInput::Message {
            from: 2,
            bytes: tagged(NOT_HELD_MAGIC, &hash),
        },
    );
    assert_eq!(w.status(1).phase, "stored");
    // Member 4 (which never confirmed) says it does not hold the set: member
    // 1 stops waiting, keeps the set parked, and retries later.
    w.input(
        1,
        RekeyInput::Message {
            from: 4,
            bytes: tagged(NOT_HELD_MAGIC, &hash),
        },
    );
    let s = w.status(1).clone();
    assert_eq!(s.phase, "idle", "{s:?}");
    assert_eq!(s.failed, 1);
    assert!(s.last_error.unwrap().contains("member 4 does not hold"));
    assert_eq!(s.completed, 0);
    // A parked set is still answered as held.
    w.wire.clear();
    w.input(
        1,
        RekeyInput::Message {
            from: 3,
            bytes: tagged(STORED_MAGIC, &hash),
        },
    );
    assert!(
        w.wire
            .iter()
            .any(|(f, t, b)| *f == 1 && *t == 3 && *b == tagged(STORED_MAGIC, &hash)),
        "{:?}",
        w.wire
    );
    // An unknown hash is answered "not held"; junk and strangers are ignored.
    w.wire.clear();
    w.now += 1_000;
    w.input(
        1,
        RekeyInput::Message {
            from: 3,
            bytes: tagged(STORED_MAGIC, &[9; 32]),
        },
    );
    assert_eq!(
        w.wire.pop_front(),
        Some((1, 3, tagged(NOT_HELD_MAGIC, &[9; 32])))
    );
    w.input(
        1,
        RekeyInput::Message {
            from: 9,
            bytes: REQUEST_MAGIC.to_vec(),
        },
    );
    w.input(
        1,
        RekeyInput::Message {
            from: 3,
            bytes: b"SRFS short".to_vec(),
        },
    );
    assert!(w.wire.is_empty(), "{:?}", w.wire);
}

#[test]
fn a_schedule_starts_every_member_at_the_same_boundary() {
    let mut w = World::new();
    w.timing.every_ms = Some(60_000);
    for i in 1..=N {
        let live = w.members[&i].live.clone();
        w.boot(i, live, None);
    }
    let due = w.status(1).next_scheduled_ms.unwrap();
    assert_eq!(due % 60_000, 0);
    assert!(due > T0);
    w.run_until(due + 3_000);
    let set = w.status(1).key_set.clone();
    for i in 1..=N {
        assert_eq!(w.status(i).completed, 1, "member {i}: {:?}", w.status(i));
        assert_eq!(w.status(i).key_set, set);
        assert_eq!(w.status(i).next_scheduled_ms, Some(due + 60_000));
    }
}

#[test]
fn a_member_killed_after_its_nonce_and_restarted_ends_in_one_set_for_all() {
    let mut w = World::new();
    let old = w.status(1).key_set.clone();
    w.input(1, RekeyInput::Start);
    // Let member 4 get going (it has sent its nonce), then kill it.
    let mut delivered = 0;
    w.deliver_until(|_| {
        delivered += 1;
        delivered > 12
    });
    assert_eq!(w.status(4).phase, "ceremony");
    w.down.insert(4);
    w.run_until(w.now + 2_000);
    w.down.clear();
    let live = w.members[&4].live.clone();
    w.boot(4, live, None);
    w.run_until(T0 + 90_000);
    let new = w.status(1).key_set.clone();
    assert_ne!(new, old, "{:?}", w.status(1));
    for i in 1..=N {
        let s = w.status(i);
        assert_eq!(s.key_set, new, "member {i}: {s:?}");
        assert_eq!(s.phase, "idle", "member {i}: {s:?}");
        assert!(w.members[&i].pending.is_none(), "member {i}");
        eprintln!(
            "member {i}: run {}, completed {}, failed {}",
            s.run, s.completed, s.failed
        );
    }
    assert!(live_shares_sign(&mut w, &[1, 2, 4]));
}

#[test]
fn a_run_named_far_ahead_of_the_clock_is_ignored() {
    let mut w = World::new();
    let request = |run: u64| {
        let mut b = REQUEST_MAGIC.to_vec();
        b.extend_from_slice(&run.to_be_bytes());
        b
    };
    // A hostile member 4 names the last possible run: nobody follows.
    for to in 1..=3 {
        w.input(
            to,
            RekeyInput::Message {
                from: 4,
                bytes: request(u64::MAX),
            },
        );
        assert_eq!(w.status(to).phase, "idle");
        assert_eq!(w.status(to).run, 0);
    }
    // A run within reach of the clock starts the others, and the refresh
    // completes with every member.
    w.input(
        1,
        RekeyInput::Message {
            from: 4,
            bytes: request(w.now + 1_000),
        },
    );
    assert_eq!(w.status(1).phase, "ceremony");
    w.run_until(T0 + 5_000);
    for i in 1..=N {
        assert_eq!(w.status(i).completed, 1, "member {i}: {:?}", w.status(i));
    }
}

#[test]
fn a_full_disk_fails_the_refresh_cleanly_and_a_failed_switch_is_retried() {
    let mut w = World::new();
    let old = w.status(1).key_set.clone();
    // Member 2 cannot write its pending keys: nobody switches, it says why,
    // and the retry (disk space back) finishes the refresh everywhere.
    w.failing_writes.insert(2, 1);
    w.input(1, RekeyInput::Start);
    w.run_until(T0 + 5_000);
    let s2 = w.status(2).clone();
    assert_eq!(s2.failed, 1, "{s2:?}");
    assert!(
        s2.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot store the new shares: No space left")),
        "{s2:?}"
    );
    for i in 1..=N {
        assert_eq!(w.status(i).key_set, old, "member {i} did not switch");
        assert_eq!(w.status(i).completed, 0);
    }
    // Every member's switch fails once on disk: each keeps its old files,
    // tries again at its next re-send (no "stored" comes any more: all were
    // acked), and all end on one set.
    for i in 1..=N {
        w.failing_switches.insert(i, 1);
    }
    w.run_until(T0 + 70_000);
    let new = w.status(1).key_set.clone();
    assert_ne!(new, old);
    assert!(
        w.failing_switches.values().all(|n| *n == 0),
        "every switch failed once"
    );
    for i in 1..=N {
        let s = w.status(i);
        assert_eq!(s.key_set, new, "member {i}: {s:?}");
        assert_eq!(s.completed, 1, "member {i}: {s:?}");
        assert!(w.members[&i].pending.is_none(), "member {i}");
    }
    assert!(live_shares_sign(&mut w, &[1, 2, 3]));
}

#[test]
fn a_switch_that_failed_on_disk_is_tried_again_without_any_message() {
    let mut w = World::new();
    w.input(1, RekeyInput::Start);
    w.deliver_until(|w| w.members.values().all(|m| m.pending.is_some()));
    // Member 1 alone, restarted with its pending keys; every other member's
    // "stored" arrives, then the switch fails on disk.
    let (live, pending) = {
        let m = &w.members[&1];
        (m.live.clone(), m.pending.clone().unwrap())
    };
    let hash = outcome_hash(&pending);
    let (mut r, _) = Rekey::new(
        1,
        1..=N,
        w.timing.clone(),
        factory(1, &w.identities),
        live,
        Some(pending),
        w.now,
    );
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut out = Vec::new();
    for from in 2..=N {
        out.extend(r.handle(
            w.now,
            RekeyInput::Message {
                from,
                bytes: tagged(STORED_MAGIC, &hash),
            },
            &mut rng,
        ));
    }
    let switches = |o: &[RekeyOutput]| {
        o.iter()
            .filter(|o| matches!(o, RekeyOutput::SwitchToPending))
            .count()
    };
    assert_eq!(switches(&out), 1);
    let out = r.handle(
        w.now,
        RekeyInput::Switched(Err("No space left on device".into())),
        &mut rng,
    );
    assert_eq!(switches(&out), 0);
    assert_eq!(r.status().phase, "stored");
    // Nothing else arrives: the next re-send time tries the switch again.
    let at = r.next_wake().expect("a timer");
    assert!(at <= w.now + w.timing.resend_ms, "{at}");
    let out = r.handle(at, RekeyInput::Tick, &mut rng);
    assert_eq!(switches(&out), 1, "{out:?}");
    let out = r.handle(at, RekeyInput::Switched(Ok(())), &mut rng);
    assert!(out.iter().any(|o| matches!(o, RekeyOutput::LeadWith(_))));
    assert_eq!(r.status().completed, 1);
}
