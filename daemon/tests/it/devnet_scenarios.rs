//! The issue-18 bad days through a whole committee: four `sibyl run`
//! members observing a `sibyl sim-exchange` (prices held still, so the
//! model's price is the honest reference), each scenario switched on
//! through the exchange's control API, and the *signed* leaf read from a
//! member's API: the price stays within 10 bps of the market where it
//! should, and the leaf's status says what happened (degraded when venues
//! drop out, halted or market_closed when the venues' status endpoints say
//! so, ok again after).

use crate::common;

use serde_json::Value;
use sibyl::cmd::devnet::{DevnetFile, http_get};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const FEED: &str = "BTC-USD";

fn json(url: &str) -> Option<Value> {
    http_get(url)
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
}

struct Rig {
    _dir: tempfile::TempDir,
    file: DevnetFile,
    sim_url: String,
    sim: Child,
    _members: common::Members,
}

impl Drop for Rig {
    fn drop(&mut self) {
        common::terminate(&mut self.sim);
    }
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("devnet");
        let file = common::setup_devnet_with(&net, 4, &["--interval", "500ms"]);
        let sim_url = file.sim_exchange.clone().expect("a simulated exchange");
        let sim = common::sibyl()
            .args(["sim-exchange", "--frozen", "--listen"])
            .arg(sim_url.trim_start_matches("http://"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(net.join("sim-exchange.log")).unwrap())
            .spawn()
            .unwrap();
        let members = common::Members(
            file.members
                .iter()
                .map(|m| Some(common::spawn(&m.config, &m.log)))
                .collect(),
        );
        let rig = Rig {
            _dir: dir,
            file,
            sim_url,
            sim,
            _members: members,
        };
        rig.until("an ok leaf of BTC-USD", 120, |l| l["status"] == "ok");
        rig
    }

    fn api(&self) -> &str {
        &self.file.members[0].api_url
    }

    /// The newest signed leaf of the feed.
    fn leaf(&self) -> Option<Value> {
        json(&format!("{}/v1/feeds/{FEED}/latest", self.api()))
    }

    /// The round of the newest signed leaf (0 before any).
    fn round(&self) -> u64 {
        self.leaf().and_then(|l| l["round"].as_u64()).unwrap_or(0)
    }

    /// The market's price (no venue offset), in the leaf's fixed point (8 decimals).
    fn market(&self) -> i128 {
        let v = json(&format!("{}/control/price/BTC", self.sim_url)).expect("sim price");
        let usd: f64 = v["usd"].as_str().unwrap().parse().unwrap();
        (usd * 1e8).round() as i128
    }

    fn post(&self, what: &str, body: &str) {
        let out = std::process::Command::new("curl")
            .args([
                "-fsS",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ])
            .arg(format!("{}/control/{what}", self.sim_url))
            .output()
            .expect("curl");
        assert!(out.status.success(), "POST /control/{what} {body}: {out:?}");
    }

    fn scenario(&self, name: &str) {
        self.post("scenario", &format!(r#"{{"name":"{name}"}}"#));
    }

    /// Waits for a signed leaf (newer than any seen before the call) that
    /// passes `f`; returns it and how long it took.
    fn until(&self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> (Value, Duration) {
        let from = self.leaf().and_then(|l| l["round"].as_u64());
        let at = Instant::now();
        let mut found = None;
        common::wait_for(what, secs, || {
            found = self
                .leaf()
                .filter(|l| from.is_none_or(|r| l["round"].as_u64().is_some_and(|n| n > r)))
                .filter(|l| f(l));
            found.is_some()
        });
        (found.unwrap(), at.elapsed())
    }

    /// Every signed leaf for `secs` seconds is within `bps` of the market.
    fn prices_hold(&self, secs: u64, bps: i128) -> (u64, i128) {
        let end = Instant::now() + Duration::from_secs(secs);
        let (mut seen, mut worst, mut last) = (0u64, 0i128, None);
        while Instant::now() < end {
            if let Some(l) = self.leaf()
                && l["round"] != Value::Null
                && last.as_ref() != Some(&l["round"])
            {
                last = Some(l["round"].clone());
                let p = price(&l);
                let m = self.market();
                let off = (p - m).abs() * 10_000 / m;
                assert!(
                    off <= bps,
                    "signed price {p} is {off} bps from the market {m}: {l}"
                );
                worst = worst.max(off);
                seen += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (seen, worst)
    }
}

/// Which round after the switch signed `l`: "round +1" is the first round
/// that started after it (a round already running cannot know).
fn rounds_after(l: &Value, switched_in: u64) -> String {
    let r = l["round"].as_u64().unwrap_or(0);
    format!("in round +{} (round {r})", r.saturating_sub(switched_in))
}

fn price(l: &Value) -> i128 {
    l["price"].as_str().unwrap().parse().unwrap()
}

fn has_flag(l: &Value, flag: &str) -> bool {
    l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

#[test]
fn signed_leaves_follow_the_bad_days_of_the_market() {
    let _committee = common::one_committee_at_a_time();
    let rig = Rig::start();
    let (seen, worst) = rig.prices_hold(3, 10);
    assert!(seen >= 2, "{seen} leaves in 3 s");
    eprintln!("calm: {seen} signed leaves, worst {worst} bps from the market");

    // One venue 1000x off (Kraken, a USD venue): never in a signed price.
    rig.post(
        "fault",
        r#"{"venue":"kraken","fault":{"kind":"scaled","times":1000}}"#,
    );
    let (seen, worst) = rig.prices_hold(5, 10);
    eprintln!("kraken 1000x: {seen} signed leaves, worst {worst} bps from the market");
    // A 30 % wick on Coinbase for 5 s.
    rig.post("fault", r#"{"venue":"kraken","fault":null}"#);
    rig.post(
        "fault",
        r#"{"venue":"coinbase","fault":{"kind":"wick","bps":3000,"ms":5000}}"#,
    );
    let (seen, worst) = rig.prices_hold(6, 10);
    eprintln!("coinbase wick: {seen} signed leaves, worst {worst} bps from the market");
    rig.post("fault", r#"{"venue":"coinbase","fault":null}"#);

    // A thin venue pumped 90 bps (inside the 200 bps band, a thousandth of
    // its volume): used, and weighs next to nothing.
    rig.post(
        "fault",
        r#"{"venue":"kucoin","fault":{"kind":"pump","bps":90}}"#,
    );
    let (seen, worst) = rig.prices_hold(5, 10);
    eprintln!("kucoin pumped 90 bps: {seen} signed leaves, worst {worst} bps from the market");
    rig.post("fault", r#"{"venue":"kucoin","fault":null}"#);

    // USDT departs its peg (0.95 USD): the USDT venues' prices, converted
    // with USDT's own feed, agree with the USD venues, and the leaf says
    // the peg departed.
    rig.post("depeg", r#"{"asset":"USDT","usd":0.95}"#);
    let (l, took) = rig.until("a peg_departed leaf", 60, |l| has_flag(l, "peg_departed"));
    let m = rig.market();
    let off = (price(&l) - m).abs() * 10_000 / m;
    assert!(off <= 10, "signed price {off} bps from the market: {l}");
    let (seen, worst) = rig.prices_hold(3, 10);
    eprintln!(
        "USDT at 0.95: signed peg_departed {:.2} s after the switch, {seen} leaves after, worst {worst} bps from the market",
        took.as_secs_f64()
    );
    rig.post("depeg", r#"{"asset":"USDT","usd":null}"#);
    rig.until("the peg back", 60, |l| !has_flag(l, "peg_departed"));

    // Venues drop out: two left, fewer than the feed's three.
    let dropout_round = rig.round();
    rig.scenario("dropout");
    let (l, took) = rig.until("a degraded leaf", 60, |l| l["status"] == "degraded");
    assert!(has_flag(&l, "few_venues"), "{l}");
    assert!(l["venues"].as_u64().unwrap() <= 2, "{l}");
    eprintln!(
        "dropout: signed degraded ({} venues, flags {}) {:.2} s after the switch, {} (a venue leaves with its first failed request; a closed stream is REST-polled at once, REST-only venues fail at their next 500 ms poll; rounds of 500 ms)",
        l["venues"],
        l["flags"],
        took.as_secs_f64(),
        rounds_after(&l, dropout_round)
    );
    rig.scenario("calm");
    rig.until("an ok leaf after dropout", 60, |l| l["status"] == "ok");

    // Trading halts everywhere: the last price, signed as halted.
    let before = rig.market();
    let before_round = rig.round();
    rig.scenario("halted");
    let (l, took) = rig.until("a halted leaf", 60, |l| l["status"] == "halted");
    assert!(has_flag(&l, "halted"), "{l}");
    assert!((price(&l) - before).abs() * 10_000 / before <= 10, "{l}");
    eprintln!(
        "halted: signed halted {:.2} s after the switch, {} (Coinbase, Kraken and OKX stream the halt; it sends the other venues to their status endpoints at once; rounds of 500 ms)",
        took.as_secs_f64(),
        rounds_after(&l, before_round)
    );
    // Still halted once every venue's last quote is older than max_quote_age (10 s).
    std::thread::sleep(Duration::from_secs(11));
    rig.until("a halted leaf past max_quote_age", 30, |l| {
        l["status"] == "halted"
    });
    let lifted_round = rig.round();
    rig.scenario("calm");
    let (l, took) = rig.until("an ok leaf after the halt", 60, |l| l["status"] == "ok");
    eprintln!(
        "halt lifted: ok again {:.2} s after the switch, {}",
        took.as_secs_f64(),
        rounds_after(&l, lifted_round)
    );

    // The market closes.
    let closed_round = rig.round();
    rig.scenario("market-closed");
    let (l, took) = rig.until("a market_closed leaf", 60, |l| {
        l["status"] == "market_closed"
    });
    assert!(has_flag(&l, "market_closed"), "{l}");
    eprintln!(
        "market closed: signed market_closed {:.2} s after the switch, {}",
        took.as_secs_f64(),
        rounds_after(&l, closed_round)
    );
    rig.scenario("calm");
    rig.until("an ok leaf after the close", 60, |l| l["status"] == "ok");
}
