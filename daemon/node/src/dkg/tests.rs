//! DKG ceremonies between real `Net`s on loopback.

use super::*;
use crate::keystore::KdfParams;
use crate::keystore::tests::tempdir;
use crate::net::tests::{committee, config, fast_limits};
use crate::net::{Member, NetConfig};
use frost_core::keys::dkg::part1;
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::{Ciphersuite, Identifier};
use sha3::Digest;
use sibyl_aggregator::dkg::DkgError as Ceremony;

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

fn params(keys: &[Keypair], members: &[Member], me: usize, t: u16) -> DkgParams {
    DkgParams {
        digest: ConfigDigest([5; 32]),
        threshold: t,
        identity: keys[me].clone(),
        members: members.iter().map(|m| (m.index, m.peer_id)).collect(),
        timeout: Duration::from_secs(30),
        resend_interval: Duration::from_millis(300),
    }
}

fn net_config(keys: &[Keypair], members: &[Member], me: usize) -> NetConfig {
    config(&keys[me], members, members[me].index, fast_limits())
}

fn sign_and_verify<C: Ciphersuite>(kps: &[&KeyPackage<C>], pkp: &PublicKeyPackage<C>) {
    let mut rng = rand::rngs::OsRng;
    let msg = b"report header digest";
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in kps {
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let sp = frost_core::SigningPackage::new(commitments, msg);
    let mut shares = BTreeMap::new();
    for kp in kps {
        let share = frost_core::round2::sign(&sp, &nonces[kp.identifier()], kp).expect("sign");
        shares.insert(*kp.identifier(), share);
    }
    let sig = frost_core::aggregate(&sp, &shares, pkp).expect("aggregate");
    pkp.verifying_key()
        .verify(msg, &sig)
        .expect("group signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_agree_on_keys_for_both_suites_and_store_them() {
    let (keys, members) = committee(4);
    let dir = tempdir();
    let pass = Passphrase::new("dkg test").expect("pass");
    let mut tasks = Vec::new();
    for me in 0..4 {
        let cfg = net_config(&keys, &members, me);
        let p = params(&keys, &members, me, 3);
        let store =
            Keystore::new(dir.path().join(format!("m{me}"))).with_kdf(KdfParams::insecure_fast());
        let pass = pass.clone();
        tasks.push(tokio::spawn(async move {
            let mut net = Net::new(cfg).expect("net");
            let mut lines = Vec::new();
            let r = run_dkg_and_store(
                &mut net,
                p,
                &[Suite::Ed25519, Suite::Secp256k1Evm],
                &store,
                &pass,
                |l| lines.push(l.to_string()),
            )
            .await;
            (r, lines)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        let (r, lines) = t.await.expect("task");
        let r = r.expect("ceremony succeeds");
        assert!(lines.iter().any(|l| l.contains("round 1")), "{lines:?}");
        results.push(r);
    }
    let keys0 = results[0].group_keys();
    assert_eq!(keys0.len(), 2);
    for r in &results {
        assert_eq!(r.group_keys(), keys0, "members disagree on the group key");
    }
    // Any 3 of 4 sign for the group key, in both suites.
    let ed: Vec<&KeyPackage<Ed>> = results[1..]
        .iter()
        .map(|r| &r.ed25519.as_ref().expect("ed").key_package)
        .collect();
    sign_and_verify(
        &ed,
        &results[0].ed25519.as_ref().expect("ed").public_key_package,
    );
    let evm: Vec<&KeyPackage<Evm>> = results[..3]
        .iter()
        .map(|r| &r.secp256k1_evm.as_ref().expect("evm").key_package)
        .collect();
    sign_and_verify(
        &evm,
        &results[3]
            .secp256k1_evm
            .as_ref()
            .expect("evm")
            .public_key_package,
    );

    // What was stored reads back and matches.
    let store = Keystore::new(dir.path().join("m2"));
    let kp = store
        .read_key_package::<Ed>(&ConfigDigest([5; 32]), &pass)
        .expect("stored key package");
    assert_eq!(kp, results[2].ed25519.as_ref().expect("ed").key_package);
    let pkp = store
        .read_public_key_package::<Evm>(&ConfigDigest([5; 32]))
        .expect("stored public key package");
    assert_eq!(keystore::group_key_hex(&pkp), keys0[&Suite::Secp256k1Evm]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocating_member_is_named_and_nothing_is_stored() {
    let (keys, members) = committee(4);
    let dir = tempdir();
    let pass = Passphrase::new("dkg test").expect("pass");
    let mut tasks = Vec::new();
    for me in 0..3 {
        let cfg = net_config(&keys, &members, me);
        let p = params(&keys, &members, me, 3);
        let store =
            Keystore::new(dir.path().join(format!("m{me}"))).with_kdf(KdfParams::insecure_fast());
        let pass = pass.clone();
        tasks.push(tokio::spawn(async move {
            let mut net = Net::new(cfg).expect("net");
            run_dkg_and_store(&mut net, p, &[Suite::Ed25519], &store, &pass, |_| {}).await
        }));
    }

    // Member 4 signs two different round-1 packages: A to member 1, B to 2 and 3.
    let mut evil = Net::new(net_config(&keys, &members, 3)).expect("evil net");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while evil.connected().len() < 3 {
        let _ = tokio::time::timeout_at(deadline, evil.next_event())
            .await
            .expect("evil member connects");
    }
    let session = session_id::<Ed>(&ConfigDigest([5; 32]));
    // It takes part in the nonce phase like anyone, so all agree on the run.
    let mut nonces: sibyl_aggregator::dkg::RunNonces = [(4u16, [4u8; 32])].into();
    for to in 1..=3 {
        evil.send(to, DkgMessage::Nonce { nonce: [4; 32] }.encode(&session))
            .expect("send nonce");
    }
    while nonces.len() < 4 {
        let event = tokio::time::timeout_at(deadline, evil.next_event())
            .await
            .expect("the honest members' nonces");
        if let crate::net::NetEvent::Message { from, bytes } = event
            && let Ok((_, DkgMessage::Nonce { nonce })) = DkgMessage::decode(&bytes)
        {
            nonces.insert(from, nonce);
        }
    }
    let run = sibyl_aggregator::dkg::run_session(&session, &nonces);
    let id = Identifier::<Ed>::try_from(4u16).expect("id");
    let mut signed = Vec::new();
    for _ in 0..2 {
        let (_, pkg) = part1::<Ed, _>(id, 4, 3, &mut rand::rngs::OsRng).expect("part1");
        let bytes = pkg.serialize().expect("ser");
        let hash: [u8; 32] = sha3::Sha3_256::digest(&bytes).into();
        let signature = keys[3]
            .sign(&round1_statement(&run, 4, &hash))
            .expect("sign");
        signed.push(DkgMessage::Round1 {
            nonces: nonces.clone(),
            package: bytes,
            signature,
        });
    }
    evil.send(1, signed[0].encode(&session)).expect("send A");
    evil.send(2, signed[1].encode(&session)).expect("send B");
    evil.send(3, signed[1].encode(&session)).expect("send B");
    // Keep its connections serviced until the honest members finish.
    let pump = tokio::spawn(async move {
        loop {
            let _ = evil.next_event().await;
        }
    });

    for t in tasks {
        let err = t.await.expect("task").expect_err("ceremony must fail");
        assert!(
            matches!(
                err,
                DkgError::Ceremony(Ceremony::Equivocation { member: 4, .. })
            ),
            "wrong blame: {err}"
        );
        assert_eq!(err.culprit(), Some(4));
        assert!(err.to_string().contains("member 4"));
    }
    pump.abort();
    // Nothing half-done was stored.
    for me in 0..3 {
        let store = Keystore::new(dir.path().join(format!("m{me}")));
        assert!(!store.key_package_path::<Ed>().exists());
        assert!(!store.public_key_package_path::<Ed>().exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_member_times_out_naming_it() {
    let (keys, members) = committee(3);
    let mut tasks = Vec::new();
    for me in 0..2 {
        let cfg = net_config(&keys, &members, me);
        let mut p = params(&keys, &members, me, 2);
        p.timeout = Duration::from_secs(2);
        tasks.push(tokio::spawn(async move {
            let mut net = Net::new(cfg).expect("net");
            run_dkg(&mut net, p, &[Suite::Ed25519], |_| {}).await
        }));
    }
    for t in tasks {
        let err = t.await.expect("task").expect_err("member 3 never came");
        match err {
            DkgError::Ceremony(Ceremony::Timeout { phase, missing }) => {
                assert_eq!(phase, Phase::Connect);
                assert_eq!(missing, vec![3]);
            }
            other => panic!("unexpected error: {other}"),
        }
    }
}

/// The committed DKG vector (`aggregator/vectors/dkg_vectors.json`): four
/// members with fixed identity keys (`[i; 32]`) and seeded generators
/// (`ChaCha20Rng::seed_from_u64(i)`) run both suites over real `Net`s; every
/// byte each member sent, its key packages and its public key package files
/// are hashed. Set `SIBYL_WRITE_DKG_VECTORS=1` to rewrite the file.
const DKG_VECTORS: &str = include_str!("../../../../aggregator/vectors/dkg_vectors.json");

fn h(bytes: &[u8]) -> String {
    hex::encode(sha3::Sha3_256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_ceremony_matches_the_committed_vector() {
    use rand_core::SeedableRng;
    let n = 4u16;
    let keys: Vec<Keypair> = (1..=n)
        .map(|i| Keypair::ed25519_from_bytes([u8::try_from(i).expect("i"); 32]).expect("key"))
        .collect();
    let members: Vec<Member> = keys
        .iter()
        .zip(1..=n)
        .map(|(k, index)| Member {
            index,
            peer_id: k.public().to_peer_id(),
            addr: crate::net::tests::tcp_addr(crate::net::tests::free_port()),
        })
        .collect();
    let dir = tempdir();
    let mut tasks = Vec::new();
    for me in 0..usize::from(n) {
        let cfg = net_config(&keys, &members, me);
        let p = params(&keys, &members, me, 3);
        let store = Keystore::new(dir.path().join(format!("m{me}")));
        tasks.push(tokio::spawn(async move {
            let mut net = Net::new(cfg).expect("net");
            let mut rng =
                rand_chacha::ChaCha20Rng::seed_from_u64(u64::try_from(me + 1).expect("me"));
            let mut dkg =
                machine(&net, &p, &[Suite::Ed25519, Suite::Secp256k1Evm]).expect("params");
            let result = drive(
                &mut net,
                &mut dkg,
                Duration::from_millis(900),
                |_| {},
                &mut rng,
            )
            .await
            .expect("ceremonies");
            let ed = result.ed25519.expect("ed25519 keys");
            let evm = result.secp256k1_evm.expect("secp256k1-evm keys");
            let mut sent = Vec::new();
            for per_member in dkg.sent().values() {
                for msgs in per_member.values() {
                    for m in msgs {
                        sent.extend_from_slice(m);
                    }
                }
            }
            let digest = ConfigDigest([5; 32]);
            store
                .write_public_key_package(&digest, &ed.public_key_package)
                .expect("write");
            store
                .write_public_key_package(&digest, &evm.public_key_package)
                .expect("write");
            let ed_file = std::fs::read(store.public_key_package_path::<Ed>()).expect("read");
            let evm_file = std::fs::read(store.public_key_package_path::<Evm>()).expect("read");
            serde_json::json!({
                "index": me + 1,
                "sent_sha3": h(&sent),
                "ed25519": {
                    "group_key": keystore::group_key_hex(&ed.public_key_package),
                    "key_package_sha3": h(&ed.key_package.serialize().expect("ser")),
                    "public_key_package_sha3": h(&ed.public_key_package.serialize().expect("ser")),
                    "public_key_package_file_sha3": h(&ed_file),
                },
                "secp256k1-evm": {
                    "group_key": keystore::group_key_hex(&evm.public_key_package),
                    "key_package_sha3": h(&evm.key_package.serialize().expect("ser")),
                    "public_key_package_sha3": h(&evm.public_key_package.serialize().expect("ser")),
                    "public_key_package_file_sha3": h(&evm_file),
                },
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    let got = serde_json::json!({
        "about": "sibyl dkg, n = 4, t = 3, committee digest [5; 32]; member i's identity key is ed25519 from bytes [i; 32] and its generator ChaCha20Rng::seed_from_u64(i); sent_sha3 hashes every message the member sent, ordered by session, recipient and sending order; written by daemon/node/src/dkg/tests.rs",
        "members": out,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../aggregator/vectors/dkg_vectors.json");
    if std::env::var_os("SIBYL_WRITE_DKG_VECTORS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&got).expect("json") + "\n",
        )
        .expect("write vectors");
    }
    let want: serde_json::Value = serde_json::from_str(DKG_VECTORS).expect("committed vector");
    assert_eq!(got, want, "the ceremony's bytes changed");
}
