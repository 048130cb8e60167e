//! Real-socket tests on 127.0.0.1: several `Net`s in one process.

use super::*;
use std::time::Duration;

/// A free loopback port below the ephemeral range (so no outgoing connection
/// can take it between now and the bind), unique within this process.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 600) * 20;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (base - 20_000 + offset) % 12_000).unwrap_or(20_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn tcp_addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("multiaddr")
}

pub(crate) fn fast_limits() -> Limits {
    Limits {
        redial_min: Duration::from_millis(50),
        redial_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Keys and members of an `n`-member committee on fresh loopback ports.
pub(crate) fn committee(n: u16) -> (Vec<Keypair>, Vec<Member>) {
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate_ed25519()).collect();
    let members = keys
        .iter()
        .zip(1..=n)
        .map(|(k, index)| Member {
            index,
            peer_id: k.public().to_peer_id(),
            addr: tcp_addr(free_port()),
        })
        .collect();
    (keys, members)
}

pub(crate) fn config(key: &Keypair, members: &[Member], me: u16, limits: Limits) -> NetConfig {
    let listen = members
        .iter()
        .find(|m| m.index == me)
        .expect("member")
        .addr
        .clone();
    NetConfig {
        listen,
        identity: key.clone(),
        members: members.to_vec(),
        limits,
        report_validator: None,
    }
}

/// Drive all nets until `done` holds or `timeout` passes; returns every event
/// seen as (position in `nets`, event) and whether `done` held.
pub(crate) async fn pump(
    nets: &mut [&mut Net],
    timeout: Duration,
    mut done: impl FnMut(&[&mut Net], &[(usize, NetEvent)]) -> bool,
) -> (Vec<(usize, NetEvent)>, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut log = Vec::new();
    loop {
        if done(nets, &log) {
            return (log, true);
        }
        let next = {
            let futs = nets
                .iter_mut()
                .map(|n| Box::pin(n.next_event()))
                .collect::<Vec<_>>();
            // Wake up now and then: some conditions (gossip subscriptions,
            // stats) change without an event.
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            tokio::time::timeout_at(wake, futures::future::select_all(futs))
                .await
                .map(|(event, i, _)| (i, event))
        };
        match next {
            Ok(entry) => log.push(entry),
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(_) => {
                let ok = done(nets, &log);
                return (log, ok);
            }
        }
    }
}

pub(crate) fn all_connected(nets: &[&mut Net], n: usize) -> bool {
    nets.iter().all(|net| net.connected().len() == n - 1)
}

fn start(keys: &[Keypair], members: &[Member], limits: &Limits) -> Vec<Net> {
    keys.iter()
        .zip(members)
        .map(|(k, m)| Net::new(config(k, members, m.index, limits.clone())).expect("net"))
        .collect()
}

#[tokio::test]
async fn members_connect_exchange_messages_and_reports() {
    let (keys, members) = committee(4);
    let mut nets = start(&keys, &members, &fast_limits());
    // Member 4 rejects reports starting with 'x'.
    drop(nets.pop());
    let mut cfg = config(&keys[3], &members, 4, fast_limits());
    cfg.report_validator = Some(Arc::new(|b: &[u8]| b.first() != Some(&b'x')));
    nets.push(Net::new(cfg).expect("net 4"));
    let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 4) && n.iter().all(|x| x.report_peers().len() == 3)
    })
    .await;
    assert!(ok, "committee did not fully connect and subscribe");

    refs[0].send(2, b"hello two".to_vec()).expect("send");
    refs[2]
        .broadcast(b"from three".to_vec())
        .expect("broadcast");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |_, log| {
        log.iter()
            .filter(|(_, e)| matches!(e, NetEvent::Message { .. }))
            .count()
            >= 4
    })
    .await;
    assert!(ok, "messages not delivered: {log:?}");
    let msgs: Vec<(usize, u16, Vec<u8>)> = log
        .into_iter()
        .filter_map(|(i, e)| match e {
            NetEvent::Message { from, bytes } => Some((i, from, bytes)),
            _ => None,
        })
        .collect();
    assert!(msgs.contains(&(1, 1, b"hello two".to_vec())));
    for target in [0, 1, 3] {
        assert!(
            msgs.contains(&(target, 3, b"from three".to_vec())),
            "{msgs:?}"
        );
    }
    assert!(
        !msgs.iter().any(|(i, _, _)| *i == 2),
        "broadcast echoed to sender"
    );

    refs[0].publish_report(b"xbad".to_vec()).expect("publish");
    refs[0]
        .publish_report(b"good report".to_vec())
        .expect("publish");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |n, log| {
        log.iter()
            .filter(|(_, e)| matches!(e, NetEvent::Report { bytes, .. } if bytes == b"good report"))
            .count()
            >= 3
            && n[3].stats().dropped(DropReason::InvalidReport) == 1
    })
    .await;
    assert!(ok, "reports not delivered: {log:?}");
    for target in 1..4 {
        assert!(log.contains(&(
            target,
            NetEvent::Report {
                from: 1,
                bytes: b"good report".to_vec()
            }
        )));
    }
    // Member 4 rejected the bad report; 2 and 3 accept everything.
    assert!(!log.contains(&(
        3,
        NetEvent::Report {
            from: 1,
            bytes: b"xbad".to_vec()
        }
    )));
    assert_eq!(refs[0].stats().reports_published, 2);
    assert_eq!(refs[1].stats().messages_received, 2);
}

#[tokio::test]
async fn non_member_cannot_connect_or_inject() {
    let (keys, members) = committee(3);
    let mut nets = start(&keys, &members, &fast_limits());
    // The outsider has a valid key and believes it is member 4 of the committee.
    let outsider_key = Keypair::generate_ed25519();
    let mut outsider_view = members.clone();
    outsider_view.push(Member {
        index: 4,
        peer_id: outsider_key.public().to_peer_id(),
        addr: tcp_addr(free_port()),
    });
    let mut outsider =
        Net::new(config(&outsider_key, &outsider_view, 4, fast_limits())).expect("outsider");
    outsider.send(1, b"inject".to_vec()).expect("queued");
    outsider.broadcast(b"inject all".to_vec()).expect("queued");

    let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
    refs.push(&mut outsider);
    let (log, _) = pump(&mut refs, Duration::from_secs(3), |n, _| {
        all_connected(&n[..3], 3)
            && n[..3]
                .iter()
                .all(|x| x.stats().dropped(DropReason::NotMember) >= 1)
    })
    .await;
    // Keep trying for a while: nothing may ever get through.
    refs[3].send(2, b"inject again".to_vec()).expect("queued");
    let (log2, _) = pump(&mut refs, Duration::from_secs(2), |_, _| false).await;
    for (i, e) in log.iter().chain(&log2) {
        if *i < 3 {
            assert!(
                !matches!(e, NetEvent::Message { .. } | NetEvent::Report { .. }),
                "member {i} received {e:?}"
            );
            assert_ne!(*e, NetEvent::PeerConnected(4));
        }
    }
    for net in &refs[..3] {
        assert!(!net.connected().contains(&4));
        assert_eq!(net.connected().len(), 2);
        assert!(
            net.stats().dropped(DropReason::NotMember) >= 1,
            "{:?}",
            net.stats()
        );
        assert_eq!(net.stats().messages_received, 0);
    }
    // (The outsider itself may briefly see a connection before the member
    // closes it; what matters is that no member ever accepted it.)
}

#[tokio::test]
async fn oversized_and_over_rate_messages_are_dropped_and_counted() {
    let (keys, members) = committee(2);
    let strict = Limits {
        max_message_bytes: 1000,
        rate_per_sec: 5,
        burst: 5,
        ..fast_limits()
    };
    let loose = Limits {
        max_message_bytes: 1 << 20,
        ..fast_limits()
    };
    let mut receiver = Net::new(config(&keys[0], &members, 1, strict)).expect("receiver");
    let mut sender = Net::new(config(&keys[1], &members, 2, loose)).expect("sender");
    let mut refs: Vec<&mut Net> = vec![&mut receiver, &mut sender];
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 2)
    })
    .await;
    assert!(ok, "did not connect");

    // The sender's own limit refuses what it may not send.
    assert_eq!(
        refs[0].send(2, vec![0; 1001]),
        Err(SendError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    refs[1].send(1, vec![7; 5000]).expect("send oversized");
    let (_, ok) = pump(&mut refs, Duration::from_secs(10), |n, _| {
        n[0].stats().dropped(DropReason::Oversized) == 1
    })
    .await;
    assert!(ok, "oversized message not counted: {:?}", refs[0].stats());
    assert_eq!(refs[0].stats().messages_received, 0);

    for i in 0..60u8 {
        refs[1].send(1, vec![i]).expect("send");
    }
    let (_, ok) = pump(&mut refs, Duration::from_secs(10), |n, _| {
        let s = n[0].stats();
        s.messages_received + s.dropped(DropReason::RateLimited) == 60
    })
    .await;
    let stats = refs[0].stats();
    assert!(ok, "not all messages accounted for: {stats:?}");
    assert!(stats.messages_received >= 10, "{stats:?}");
    assert!(stats.dropped(DropReason::RateLimited) >= 30, "{stats:?}");

    // The same counts show up in the metrics.
    refs[0].report_malformed(2);
    let mut registry = prometheus_client::registry::Registry::default();
    refs[0].register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(&format!(
            "sibyl_net_dropped_total{{reason=\"rate_limited\"}} {}",
            stats.dropped(DropReason::RateLimited)
        )),
        "{text}"
    );
    assert!(
        text.contains("sibyl_net_dropped_total{reason=\"oversized\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sibyl_net_dropped_total{reason=\"malformed\"} 1"),
        "{text}"
    );
    assert!(text.contains("sibyl_net_connected_members 1"), "{text}");

    // Still alive after the flood: a message gets through once tokens refill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    refs[1].send(1, b"after".to_vec()).expect("send");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |_, log| {
        log.iter().any(|(i, e)| {
            *i == 0
                && *e
                    == NetEvent::Message {
                        from: 2,
                        bytes: b"after".to_vec(),
                    }
        })
    })
    .await;
    assert!(ok, "node stopped working after drops: {log:?}");
}

#[tokio::test]
async fn member_reconnects_after_restart_on_same_port() {
    let (keys, members) = committee(3);
    let mut nets = start(&keys, &members, &fast_limits());
    {
        let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
        let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
            all_connected(n, 3)
        })
        .await;
        assert!(ok, "did not connect");
    }
    // Member 3 goes away.
    drop(nets.pop());
    {
        let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
        let (_, ok) = pump(&mut refs, Duration::from_secs(10), |n, _| {
            n.iter().all(|x| !x.connected().contains(&3))
        })
        .await;
        assert!(ok, "disconnect not noticed");
    }
    // Let the others back off a little while it is down.
    {
        let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
        let _ = pump(&mut refs, Duration::from_millis(800), |_, _| false).await;
    }
    // It restarts with the same key on the same port; nobody is told.
    nets.push(Net::new(config(&keys[2], &members, 3, fast_limits())).expect("restart"));
    let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 3)
    })
    .await;
    assert!(ok, "did not reconnect");
    refs[0].send(3, b"welcome back".to_vec()).expect("send");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |_, log| {
        log.iter().any(|(i, e)| {
            *i == 2
                && *e
                    == NetEvent::Message {
                        from: 1,
                        bytes: b"welcome back".to_vec(),
                    }
        })
    })
    .await;
    assert!(ok, "no message after reconnect: {log:?}");
}

#[tokio::test]
async fn config_errors_are_typed() {
    let (keys, members) = committee(2);
    let stranger = Keypair::generate_ed25519();
    let err = Net::new(config(&stranger, &members, 1, fast_limits())).expect_err("not member");
    assert!(matches!(err, NetError::NotInCommittee(_)));
    let mut dup = members.clone();
    dup[1].index = 1;
    let err = Net::new(config(&keys[0], &dup, 1, fast_limits())).expect_err("dup");
    assert!(matches!(err, NetError::DuplicateMember(1)));
    // Port already taken.
    let _first = Net::new(config(&keys[0], &members, 1, fast_limits())).expect("first");
    let err = Net::new(config(&keys[0], &members, 1, fast_limits())).expect_err("port in use");
    assert!(matches!(err, NetError::Listen { .. }), "{err}");
}

/// A TCP relay on loopback in front of a member's listener. While
/// `blackhole` is set it moves no bytes and opens no new connection to the
/// member, like a partition that drops packets: connections stay open,
/// nothing arrives, and what was sent is delivered after the heal (as TCP
/// retransmission would).
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_while(blackhole: &std::sync::atomic::AtomicBool) {
    while blackhole.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_while(&blackhole).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_while(&blackhole).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn relay(target: u16, blackhole: Arc<std::sync::atomic::AtomicBool>) -> Relay {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
        .await
        .expect("relay bind");
    let port = listener.local_addr().expect("relay addr").port();
    let flag = blackhole;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let flag = flag.clone();
            conns.spawn(async move {
                wait_while(&flag).await;
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                tokio::join!(
                    pipe(in_r, out_w, flag.clone()),
                    pipe(out_r, in_w, flag.clone())
                );
            });
        }
    });
    Relay { port, task }
}

fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port")
}

/// Two members that reach each other only through relays; the relays stop
/// moving bytes (a partition), then resume. Each side must notice the
/// silence within seconds (ping every 500 ms, silence limit 2 s), not after
/// TCP's retransmission backoff, and reconnect soon after the heal.
#[tokio::test]
async fn a_silent_member_is_disconnected_and_reconnected_after_the_heal() {
    use std::sync::atomic::Ordering;
    let (keys, members) = committee(2);
    let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let to_1 = relay(port_of(&members[0].addr), blackhole.clone()).await;
    let to_2 = relay(port_of(&members[1].addr), blackhole.clone()).await;
    // Each member dials the other through the other's relay.
    let mut view_1 = members.clone();
    view_1[1].addr = tcp_addr(to_2.port);
    let mut view_2 = members.clone();
    view_2[0].addr = tcp_addr(to_1.port);
    let limits = fast_limits();
    let mut a = Net::new(config(&keys[0], &view_1, 1, limits.clone())).expect("net 1");
    let mut b = Net::new(config(&keys[1], &view_2, 2, limits.clone())).expect("net 2");
    let mut refs: Vec<&mut Net> = vec![&mut a, &mut b];
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 2)
    })
    .await;
    assert!(ok, "did not connect through the relays");
    // A few pings go through.
    let _ = pump(&mut refs, Duration::from_millis(1200), |_, _| false).await;
    assert!(refs.iter().all(|n| n.connected().len() == 1));

    // Partition.
    blackhole.store(true, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    let mut lost: [Option<Duration>; 2] = [None, None];
    let (_, ok) = pump(&mut refs, Duration::from_secs(15), |n, _| {
        for (i, net) in n.iter().enumerate() {
            if lost[i].is_none() && net.connected().is_empty() {
                lost[i] = Some(cut.elapsed());
            }
        }
        lost.iter().all(Option::is_some)
    })
    .await;
    assert!(ok, "the silence was not noticed: {lost:?}");
    // Stay partitioned a little longer: dials time out meanwhile.
    let _ = pump(&mut refs, Duration::from_secs(3), |_, _| false).await;
    assert!(refs.iter().all(|n| n.connected().is_empty()));

    // Heal.
    blackhole.store(false, Ordering::SeqCst);
    let healed = tokio::time::Instant::now();
    let (_, ok) = pump(&mut refs, Duration::from_secs(15), |n, _| {
        all_connected(n, 2)
    })
    .await;
    let back = healed.elapsed();
    assert!(ok, "did not reconnect after the heal");
    refs[0].send(2, b"after the heal".to_vec()).expect("send");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |_, log| {
        log.iter().any(|(i, e)| {
            *i == 1
                && matches!(e, NetEvent::Message { from: 1, bytes } if bytes == b"after the heal")
        })
    })
    .await;
    assert!(ok, "no message after the reconnect: {log:?}");
    let [lost_1, lost_2] = lost.map(Option::unwrap_or_default);
    eprintln!(
        "silent member: member 1 noticed after {} ms, member 2 after {} ms; reconnected {} ms after the heal",
        lost_1.as_millis(),
        lost_2.as_millis(),
        back.as_millis()
    );
    // Generous bounds (a shared machine); the goals are 3 s and ~1-2 s.
    assert!(lost_1 < Duration::from_secs(10) && lost_2 < Duration::from_secs(10));
    assert!(back < Duration::from_secs(10), "{back:?}");
    for net in &refs {
        assert!(net.stats().peer_timeouts >= 1, "{:?}", net.stats());
        assert!(net.last_seen().contains_key(&(3 - net.me())));
    }
}

#[tokio::test]
async fn messages_over_the_byte_budget_are_dropped_and_counted() {
    let (keys, members) = committee(2);
    // 1000 bytes per second and 1000 of burst: 2000 bytes at once.
    let strict = Limits {
        bytes_per_sec: 1000,
        byte_burst: 1000,
        ..fast_limits()
    };
    let mut receiver = Net::new(config(&keys[0], &members, 1, strict)).expect("receiver");
    let mut sender = Net::new(config(&keys[1], &members, 2, fast_limits())).expect("sender");
    let mut refs: Vec<&mut Net> = vec![&mut receiver, &mut sender];
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 2)
    })
    .await;
    assert!(ok, "did not connect");
    for i in 0..10u8 {
        refs[1].send(1, vec![i; 500]).expect("send");
    }
    let (_, ok) = pump(&mut refs, Duration::from_secs(10), |n, _| {
        let s = n[0].stats();
        s.messages_received + s.dropped(DropReason::OverByteBudget) == 10
    })
    .await;
    let stats = refs[0].stats();
    assert!(ok, "not all messages accounted for: {stats:?}");
    // Four fit the burst, a little refills while they arrive.
    assert!((4..=6).contains(&stats.messages_received), "{stats:?}");
    assert_eq!(stats.dropped(DropReason::RateLimited), 0, "{stats:?}");
    let mut registry = prometheus_client::registry::Registry::default();
    refs[0].register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(&format!(
            "sibyl_net_dropped_total{{reason=\"over_byte_budget\"}} {}",
            stats.dropped(DropReason::OverByteBudget)
        )),
        "{text}"
    );
}

#[tokio::test]
async fn connections_over_the_pending_limit_are_refused_and_counted() {
    use tokio::io::AsyncReadExt;
    let (keys, members) = committee(2);
    let limits = Limits {
        max_pending_incoming: 2,
        ..fast_limits()
    };
    let mut nets = start(&keys, &members, &limits);
    let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 2)
    })
    .await;
    assert!(ok, "did not connect");
    // Five strangers open TCP connections to member 1 and say nothing.
    let port = port_of(&members[0].addr);
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let (_, ok) = pump(&mut refs, Duration::from_secs(10), |n, _| {
        n[0].stats().dropped(DropReason::ConnectionLimit) >= 3
    })
    .await;
    assert!(ok, "no refusal counted: {:?}", refs[0].stats());
    // Those let in are dropped once the setup time limit (2 s) is over.
    let closed = async {
        for s in &mut idle {
            let mut byte = [0u8; 64];
            loop {
                match tokio::time::timeout(Duration::from_secs(8), s.read(&mut byte)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => continue, // multistream-select's greeting
                    Err(_) => return false,
                }
            }
        }
        true
    };
    let (closed, _) = tokio::join!(
        closed,
        pump(&mut refs, Duration::from_secs(9), |_, _| false)
    );
    assert!(closed, "an idle stranger's connection stayed open");
    // The members never lost each other.
    assert!(all_connected(&refs, 2));
    assert_eq!(refs[0].stats().dropped(DropReason::NotMember), 0);
}

#[test]
fn the_byte_budget_fits_the_committee() {
    let base = Limits::default();
    // 7 members, 50 feeds, 250 ms rounds: a proposal carries 7 x 50 values.
    let l = base
        .clone()
        .with_byte_budget(7, 50, Duration::from_millis(250));
    let proposal = 7 * 50 * 128;
    assert!(u64::from(l.byte_burst) >= 2 * base.max_message_bytes as u64);
    assert!(u64::from(l.bytes_per_sec) >= 1 << 20);
    assert!(u64::from(l.bytes_per_sec) >= 8 * 4 * proposal);
    // A large committee at a fast pace gets more than the floor.
    let big = base.with_byte_budget(31, 500, Duration::from_millis(100));
    assert!(u64::from(big.bytes_per_sec) >= 8 * 10 * 31 * 500 * 128);
}

/// This process itself stalls (the whole runtime blocked, like SIGSTOP):
/// afterwards its members are not judged silent for the time it did not run.
#[tokio::test]
async fn a_stall_of_this_node_does_not_count_as_the_members_silence() {
    let (keys, members) = committee(2);
    let mut nets = start(&keys, &members, &fast_limits());
    let mut refs: Vec<&mut Net> = nets.iter_mut().collect();
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        all_connected(n, 2)
    })
    .await;
    assert!(ok, "did not connect");
    let _ = pump(&mut refs, Duration::from_millis(600), |_, _| false).await;
    // Nothing runs: no ping is sent, answered or counted.
    std::thread::sleep(Duration::from_secs(3));
    let (log, _) = pump(&mut refs, Duration::from_millis(1500), |_, _| false).await;
    assert!(
        !log.iter()
            .any(|(_, e)| matches!(e, NetEvent::PeerDisconnected(_))),
        "{log:?}"
    );
    for net in &refs {
        assert_eq!(net.stats().peer_timeouts, 0, "{:?}", net.stats());
        assert_eq!(net.connected().len(), 1);
    }
}

/// A member written as `/dns4/localhost/tcp/PORT` is dialed through the
/// system resolver: members 1 and 3 know member 2 only by that name, and
/// member 2 cannot dial anyone (its view of their addresses is a closed
/// port), so every connection to it went through DNS.
#[tokio::test]
async fn a_member_addressed_by_dns_name_is_dialed() {
    let (keys, members) = committee(3);
    let port = port_of(&members[1].addr);
    let mut by_name = members.clone();
    by_name[1].addr = format!("/dns4/localhost/tcp/{port}")
        .parse()
        .expect("multiaddr");
    let mut unreachable = members.clone();
    for m in unreachable.iter_mut().filter(|m| m.index != 2) {
        m.addr = tcp_addr(1);
    }
    let mut n1 = Net::new(config(&keys[0], &by_name, 1, fast_limits())).expect("net 1");
    let mut n3 = Net::new(config(&keys[2], &by_name, 3, fast_limits())).expect("net 3");
    let mut n2 = Net::new(config(&keys[1], &unreachable, 2, fast_limits())).expect("net 2");
    let mut refs: Vec<&mut Net> = vec![&mut n1, &mut n2, &mut n3];
    let (_, ok) = pump(&mut refs, Duration::from_secs(20), |n, _| {
        n[1].connected().len() == 2
    })
    .await;
    assert!(ok, "member 2 was not reached through its DNS name");
    refs[0].send(2, b"by name".to_vec()).expect("send");
    let (log, ok) = pump(&mut refs, Duration::from_secs(10), |_, log| {
        log.iter().any(|(i, e)| {
            *i == 1 && matches!(e, NetEvent::Message { from: 1, bytes } if bytes == b"by name")
        })
    })
    .await;
    assert!(ok, "message not delivered: {log:?}");
}
