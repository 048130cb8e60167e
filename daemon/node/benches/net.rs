//! Committee network latency on loopback: one message from member 1 to
//! member 2 until it comes out of member 2's `next_event`, and one gossiped
//! report from member 1 until all of 4 members have it.
//!
//!   cargo bench -p sibyl-node --bench net

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use libp2p::identity::Keypair;
use sibyl_node::net::{Limits, Member, Net, NetConfig, NetEvent};

fn committee(n: u16) -> Vec<(Keypair, Member)> {
    (1..=n)
        .map(|index| {
            let key = Keypair::generate_ed25519();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let member = Member {
                index,
                peer_id: key.public().to_peer_id(),
                addr: format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"),
            };
            (key, member)
        })
        .collect()
}

fn start(n: u16) -> Vec<Net> {
    let c = committee(n);
    let members: Vec<Member> = c.iter().map(|(_, m)| m.clone()).collect();
    let limits = Limits {
        rate_per_sec: 1_000_000,
        burst: 1_000_000,
        redial_min: Duration::from_millis(20),
        ..Limits::default()
    };
    c.iter()
        .map(|(k, m)| {
            Net::new(NetConfig {
                listen: m.addr.clone(),
                identity: k.clone(),
                members: members.clone(),
                limits: limits.clone(),
                report_validator: None,
            })
            .expect("net")
        })
        .collect()
}

/// Drive all nets until `f` says stop; returns when it does.
async fn drive(nets: &mut [Net], mut f: impl FnMut(usize, NetEvent, &[Net]) -> bool) {
    loop {
        let (event, i) = {
            let futs: Vec<_> = nets.iter_mut().map(|n| Box::pin(n.next_event())).collect();
            let wake = tokio::time::sleep(Duration::from_millis(20));
            tokio::select! {
                (e, i, _) = futures::future::select_all(futs) => (Some(e), i),
                _ = wake => (None, 0),
            }
        };
        let stop = match event {
            Some(e) => f(i, e, nets),
            None => f(usize::MAX, NetEvent::PeerConnected(0), nets),
        };
        if stop {
            return;
        }
    }
}

async fn ready(nets: &mut [Net]) {
    let n = nets.len();
    drive(nets, |_, _, nets| {
        nets.iter()
            .all(|x| x.connected().len() == n - 1 && x.report_peers().len() == n - 1)
    })
    .await;
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut pair = rt.block_on(async {
        let mut nets = start(2);
        ready(&mut nets).await;
        nets
    });
    c.bench_function("net/message_1KiB_one_way", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    pair[0].send(2, vec![7; 1024]).expect("send");
                    drive(&mut pair, |i, e, _| {
                        i == 1 && matches!(e, NetEvent::Message { .. })
                    })
                    .await;
                    total += t0.elapsed();
                }
                total
            })
        })
    });

    let mut four = rt.block_on(async {
        let mut nets = start(4);
        ready(&mut nets).await;
        nets
    });
    c.bench_function("net/report_4KiB_to_3_members", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for k in 0..iters {
                    let t0 = Instant::now();
                    let mut report = vec![0u8; 4096];
                    report[..8].copy_from_slice(&k.to_be_bytes());
                    four[0].publish_report(report).expect("publish");
                    let mut got = 0;
                    drive(&mut four, |_, e, _| {
                        if matches!(e, NetEvent::Report { .. }) {
                            got += 1;
                        }
                        got == 3
                    })
                    .await;
                    total += t0.elapsed();
                }
                total
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
