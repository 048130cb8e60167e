//! Helpers both HTTP benches use (`sibyl-api`'s and, through `#[path]`,
//! `sibyl-gateway`'s): feed ids, environment knobs, timing percentiles and
//! a bare HTTP/1.1 GET.

use sibyl_aggregator::FeedId;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub fn feed(i: usize) -> FeedId {
    FeedId::new(format!("FEED{i:02}-USD")).expect("feed id")
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn report_timing(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<58} p50 {:>9.3} ms  p99 {:>9.3} ms  (n={})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let status = std::str::from_utf8(&out[9..12.min(out.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out.len())
}
