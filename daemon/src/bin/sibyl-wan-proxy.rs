//! `sibyl-wan-proxy`: a userspace TCP forwarder that makes loopback look like
//! a wide-area link, for scripts/bench-wan (a benchmark tool; no part of a
//! member).
//!
//! ```text
//! sibyl-wan-proxy --delay 25ms --jitter 3ms --loss 0.01 \
//!     --route 127.0.0.1:41001=127.0.0.1:40001 --route ...
//! ```
//!
//! Every accepted connection on a route's listen address is forwarded to its
//! target; both directions are delayed. How faithful it is:
//! - **Delay**: every chunk read from one side is written to the other
//!   `delay` (one way) after it was read, so a connection through one proxy
//!   has an RTT of 2 x delay (plus loopback). Chunks are what `read` returns
//!   (coalesced segments), not individual TCP segments.
//! - **Jitter**: each chunk's delay gets a uniform extra in [0, jitter];
//!   order is kept (a chunk never overtakes the one before it, as in TCP), so
//!   jitter also delays the chunks queued behind a late one.
//! - **Loss**: TCP never loses data; a lost segment costs its retransmission.
//!   With probability `loss` per chunk, the chunk (and, by head-of-line
//!   blocking, everything behind it on that stream) is held back one extra
//!   `rto` (default 200 ms, Linux's minimum RTO), as if the segment were
//!   dropped and resent after a retransmission timeout. Not modelled: fast
//!   retransmit (which would cost about one RTT instead of an RTO), the
//!   congestion window shrinking after a loss, bandwidth limits and the
//!   proxies' own TCP between them (both legs are loopback).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Link {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    rto: Duration,
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let v = s.strip_suffix("ms").unwrap_or(s);
    v.parse::<f64>()
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .map_err(|e| format!("`{s}` is not a duration in ms (e.g. 25ms): {e}"))
}

const USAGE: &str = "usage: sibyl-wan-proxy [--delay 25ms] [--jitter 0ms] [--loss 0.0] [--rto 200ms] --route LISTEN=TARGET [--route ...]";

fn parse_args() -> Result<(Link, Vec<(SocketAddr, SocketAddr)>), String> {
    let mut link = Link {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        rto: Duration::from_millis(200),
    };
    let mut routes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--delay" => link.delay = parse_ms(&value)?,
            "--jitter" => link.jitter = parse_ms(&value)?,
            "--rto" => link.rto = parse_ms(&value)?,
            "--loss" => {
                link.loss = value
                    .parse()
                    .ok()
                    .filter(|l: &f64| (0.0..1.0).contains(l))
                    .ok_or_else(|| format!("--loss must be in [0, 1): `{value}`"))?
            }
            "--route" => {
                let (l, t) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--route wants LISTEN=TARGET, got `{value}`"))?;
                let parse = |a: &str| {
                    a.parse::<SocketAddr>()
                        .map_err(|e| format!("`{a}` is not an address like 127.0.0.1:4000: {e}"))
                };
                routes.push((parse(l)?, parse(t)?));
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if routes.is_empty() {
        return Err(format!("no --route given\n{USAGE}"));
    }
    Ok((link, routes))
}

/// xorshift64*: reproducible enough for emulated jitter and loss.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Copies `from` to `to`, each chunk released at its emulated arrival time.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut rng = Rng(seed | 1);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut at = Instant::now() + link.delay + link.jitter.mul_f64(rng.unit());
            if link.loss > 0.0 && rng.unit() < link.loss {
                at += link.rto;
            }
            // In order, like TCP: never before the chunk ahead of it.
            at = at.max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn serve(listen: SocketAddr, target: SocketAddr, link: Link) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(listen.port());
    loop {
        let (inbound, _) = listener.accept().await?;
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let s = seed;
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::join!(pipe(ir, ow, link, s), pipe(or, iw, link, s.rotate_left(17)));
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (link, routes) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("sibyl-wan-proxy: {e}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "sibyl-wan-proxy: {} routes, one-way delay {:?} + jitter up to {:?}, loss {} (stall {:?})",
        routes.len(),
        link.delay,
        link.jitter,
        link.loss,
        link.rto
    );
    let mut tasks = Vec::new();
    for (listen, target) in routes {
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve(listen, target, link).await {
                eprintln!("sibyl-wan-proxy: {listen} -> {target}: {e}");
                std::process::exit(1);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
