//! Rendering a venue's answers from a [`Tick`]: each venue's documented
//! shapes live in its file (`venue/<name>.rs`, the mirror image of its
//! parsers; compare `fixtures/<venue>/*.json`); here are the pieces shared
//! by every venue.

use crate::venue::{Tick, Venue};

/// (HTTP status, body) of a successful ticker answer.
pub(crate) fn ticker(venue: Venue, market: &str, t: &Tick) -> (u16, String) {
    (200, venue.spec().render_ticker(market, t))
}

/// (HTTP status, body) the venue answers for a market it does not list.
pub(crate) fn unknown_symbol(venue: Venue, market: &str) -> (u16, String) {
    venue.spec().render_unknown_symbol(market)
}

/// (HTTP status, body) of the venue's rate-limit answer.
pub(crate) fn rate_limited(venue: Venue) -> (u16, String) {
    (429, venue.spec().render_rate_limited().to_string())
}

/// A body that must never become a price; `n` picks the kind.
pub(crate) fn garbage(venue: Venue, market: &str, t: &Tick, n: u64) -> (u16, String) {
    let with = |bid: &str, ask: &str, last: &str| {
        let g = Tick {
            bid: bid.into(),
            ask: ask.into(),
            last: last.into(),
            volume: t.volume.clone(),
            time_ms: t.time_ms,
        };
        ticker(venue, market, &g)
    };
    match n % 7 {
        0 => (
            200,
            "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
        ),
        1 => with("NaN", "NaN", "NaN"),
        2 => with(
            &format!("-{}", t.bid),
            &format!("-{}", t.ask),
            &format!("-{}", t.last),
        ),
        3 => with("0", "0", "0"),
        4 => with("1e30", "1e30", "1e30"),
        // Bid far above ask.
        5 => with(
            &t.ask.replacen(|c: char| c.is_ascii_digit(), "9", 1),
            &t.bid,
            &t.last,
        ),
        _ => {
            let (status, body) = ticker(venue, market, t);
            (status, body[..body.len() / 2].to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every venue's simulated answers (REST ticker, unknown symbol, rate
    /// limit, the seven garbage kinds, stream ticker) for one tick, compared
    /// with `fixtures/sim-render.txt`, recorded before the venues moved into
    /// one file each: the simulated exchange's output stays byte for byte.
    #[test]
    fn renderings_match_the_recorded_bytes() {
        let t = Tick {
            bid: "67012.10".into(),
            ask: "67012.30".into(),
            last: "67012.20".into(),
            volume: "1234.5678".into(),
            time_ms: 1_700_000_123_456,
        };
        let mut out = String::new();
        for v in Venue::ALL {
            let m = v.market("BTC", "USDT");
            out += &format!(
                "== {v} {m}\n{:?}\n{:?}\n{:?}\n",
                ticker(v, &m, &t),
                unknown_symbol(v, &m),
                rate_limited(v)
            );
            for n in 0..7 {
                out += &format!("{:?}\n", garbage(v, &m, &t, n));
            }
            let ws = v.spec().stream().map(|s| {
                let symbol = s.symbol(&m);
                s.render_ticker(&symbol, &m, &t, 7)
            });
            out += &format!("{ws:?}\n");
        }
        let recorded = include_str!("../../fixtures/sim-render.txt");
        for (i, (a, b)) in out.lines().zip(recorded.lines()).enumerate() {
            assert_eq!(a, b, "line {} of fixtures/sim-render.txt", i + 1);
        }
        assert_eq!(out.lines().count(), recorded.lines().count());
    }
}
