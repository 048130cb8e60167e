//! WebSocket streams (Binance, Coinbase, Kraken, OKX): subscribe to every
//! market of the venue, feed ticks into the same slots as REST (and, where
//! the stream has a status channel, market states as the status endpoint
//! does, the moment the venue announces them), answer and
//! send heartbeats, treat a silent socket as dead, and reconnect with
//! jittered exponential backoff. REST polling stays on as the fallback.
//! Each venue's stream format is its [`StreamSpec`] in `venue/<name>.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

use crate::error::SourceError;
use crate::health::backoff;
use crate::metrics::VenueLabels;
use crate::slots::{Shared, install_crypto_provider};
#[cfg(test)]
use crate::venue::MarketState;
use crate::venue::{Ping, RawQuote, StreamSpec, Venue};

/// How a stream session ended.
#[derive(Debug)]
enum End {
    Stale,
    Closed,
    Error(String),
}

pub(crate) async fn stream_venue(shared: Arc<Shared>, venue: Venue, markets: Vec<String>) {
    let Some(url) = shared.config.ws_url(venue) else {
        return;
    };
    install_crypto_provider();
    let mut attempt = 0u32;
    loop {
        shared
            .metrics
            .ws_connects
            .get_or_create(&VenueLabels {
                venue: venue.name().into(),
            })
            .inc();
        let started = Instant::now();
        let end = session(&shared, venue, &url, &markets).await;
        shared.stream_ended(venue);
        // A session that lived a while resets the backoff.
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        let reason = match &end {
            End::Stale => "ws_stale",
            End::Closed => "ws_closed",
            End::Error(e) => {
                debug!(%venue, error = %e, "websocket error");
                "ws_error"
            }
        };
        shared.metrics.error(venue.name(), reason);
        let delay = backoff(attempt, Duration::from_millis(500), Duration::from_secs(30));
        info!(%venue, ?end, retry_in_ms = delay.as_millis() as u64, "websocket session ended");
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Stream symbol -> the venue's market symbol.
fn stream_symbols(stream: &dyn StreamSpec, markets: &[String]) -> BTreeMap<String, String> {
    markets
        .iter()
        .map(|m| (stream.symbol(m), m.clone()))
        .collect()
}

fn ping_message(stream: &dyn StreamSpec) -> Message {
    match stream.ping() {
        Ping::Text(t) => Message::text(t),
        Ping::Frame => Message::Ping(Vec::new().into()),
    }
}

async fn session(shared: &Shared, venue: Venue, url: &str, markets: &[String]) -> End {
    let Some(stream) = venue.spec().stream() else {
        return End::Error(format!("{venue} has no stream"));
    };
    let symbols = stream_symbols(stream, markets);
    let list: Vec<&String> = symbols.keys().collect();
    let full = stream.connect_url(url, &list);
    let stale_after = shared.config.ws_stale_after.0;
    // "0s" turns market status off, streamed or read.
    let reads_status = !shared.config.market_status_interval.0.is_zero();
    let connect = timeout(
        shared.config.request_timeout.0.max(Duration::from_secs(2)),
        tokio_tungstenite::connect_async(full.as_str()),
    );
    let mut socket = match connect.await {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => return End::Error(format!("connect: {e}")),
        Err(_) => return End::Error("connect timed out".into()),
    };
    for m in stream.subscribe(&list) {
        if let Err(e) = socket.send(Message::text(m)).await {
            return End::Error(format!("subscribe: {e}"));
        }
    }
    debug!(%venue, markets = markets.len(), "websocket subscribed");
    let mut ping = tokio::time::interval(stale_after / 3);
    ping.reset();
    // Pongs and heartbeats keep a socket open without carrying prices: the
    // stream is stale when no tick arrived for `stale_after`.
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_tick.elapsed() > stale_after {
                    return End::Stale;
                }
                if let Err(e) = socket.send(ping_message(stream)).await {
                    return End::Error(format!("ping: {e}"));
                }
            }
            msg = timeout(stale_after, socket.next()) => {
                let msg = match msg {
                    Err(_) => return End::Stale,
                    Ok(None) => return End::Closed,
                    Ok(Some(Err(e))) => return End::Error(e.to_string()),
                    Ok(Some(Ok(m))) => m,
                };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Message::Close(_) => return End::Closed,
                    _ => continue,
                };
                match parse_message(venue, &text) {
                    Ok(ticks) if ticks.is_empty() => {
                        // A status-channel message, or control traffic.
                        if !reads_status {
                            continue;
                        }
                        for (sym, state) in stream.parse_states(&text) {
                            if let Some(market) = symbols.get(&sym) {
                                shared.record_state(venue, market, state, true);
                            }
                        }
                    }
                    Ok(ticks) => {
                        last_tick = Instant::now();
                        for (sym, raw) in ticks {
                            let Some(market) = symbols.get(&sym) else {
                                shared.metrics.error(venue.name(), "not_subscribed");
                                continue;
                            };
                            shared.record(venue, market, Ok(raw), None, true);
                        }
                    }
                    Err(e) => {
                        shared.metrics.error(venue.name(), e.reason());
                        debug!(%venue, error = %e, "bad websocket message");
                    }
                }
            }
        }
    }
}

/// Parse one stream message into (stream symbol, quote) ticks. Control
/// messages (subscription acks, heartbeats, pongs) give no ticks; a venue
/// without a stream gives none.
pub fn parse_message(venue: Venue, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError> {
    match venue.spec().stream() {
        Some(stream) => stream.parse(text),
        None => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_messages() {
        let b = r#"{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"0.0015","c":"16593.10","b":"16593.00","B":"1","a":"16593.20","A":"2","v":"100.5"}}"#;
        let t = parse_message(Venue::Binance, b).unwrap();
        assert_eq!(t[0].0, "btcusdt");
        assert_eq!(t[0].1.bid.as_deref(), Some("16593.00"));
        let c = r#"{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":"20153.65","open_24h":"1","volume_24h":"12.5","best_bid":"20153.64","best_ask":"20153.66","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":1,"last_size":"0.1"}"#;
        let t = parse_message(Venue::Coinbase, c).unwrap();
        assert_eq!(t[0].1.venue_time_ms, Some(1_666_222_102_061));
        assert!(parse_message(Venue::Coinbase, r#"{"type":"heartbeat","sequence":1,"last_trade_id":1,"product_id":"BTC-USD","time":"2022-10-19T23:28:22Z"}"#).unwrap().is_empty());
        let k = r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":67012.1,"bid_qty":0.5,"ask":67012.2,"ask_qty":1.0,"last":67012.1,"volume":1234.5678,"vwap":1,"low":1,"high":1,"change":1,"change_pct":1}]}"#;
        let t = parse_message(Venue::Kraken, k).unwrap();
        assert_eq!(t[0].0, "BTC/USD");
        assert_eq!(t[0].1.ask.as_deref(), Some("67012.2"));
        assert!(
            parse_message(Venue::Kraken, r#"{"channel":"heartbeat"}"#)
                .unwrap()
                .is_empty()
        );
        let o = r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","last":"9999.99","askPx":"10000.1","bidPx":"9999.9","vol24h":"2222","ts":"1597026383085"}]}"#;
        let t = parse_message(Venue::Okx, o).unwrap();
        assert_eq!(t[0].1.venue_time_ms, Some(1_597_026_383_085));
        assert!(parse_message(Venue::Okx, "pong").unwrap().is_empty());
        assert!(
            parse_message(
                Venue::Okx,
                r#"{"event":"error","code":"60012","msg":"Invalid request"}"#
            )
            .is_err()
        );
        assert!(parse_message(Venue::Binance, "{not json").is_err());
    }

    fn states(venue: Venue, text: &str) -> Vec<(String, Result<MarketState, String>)> {
        assert!(
            parse_message(venue, text).unwrap().is_empty(),
            "a status message is no tick"
        );
        let stream = venue.spec().stream().unwrap();
        stream
            .parse_states(text)
            .into_iter()
            .map(|(s, r)| (s, r.map_err(|e| e.to_string())))
            .collect()
    }

    #[test]
    fn parses_stream_status_messages() {
        let c = r#"{"type":"status","products":[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","display_name":"BTC-USD","status":"online","status_message":"","post_only":false,"limit_only":false,"cancel_only":false,"trading_disabled":true,"auction_mode":false},{"id":"ETH-USD","status":"online","trading_disabled":false},{"id":"SOL-USD","status":"sleeping"}],"currencies":[]}"#;
        let got = states(Venue::Coinbase, c);
        assert_eq!(got[0], ("BTC-USD".into(), Ok(MarketState::Halted)));
        assert_eq!(got[1], ("ETH-USD".into(), Ok(MarketState::Open)));
        assert!(
            got[2].1.as_ref().unwrap_err().contains("sleeping"),
            "{got:?}"
        );
        let k = r#"{"channel":"instrument","type":"update","data":{"assets":[],"pairs":[{"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"maintenance"},{"symbol":"ETH/USD","status":"reduce_only"}]}}"#;
        let got = states(Venue::Kraken, k);
        assert_eq!(got[0], ("BTC/USD".into(), Ok(MarketState::Halted)));
        assert_eq!(got[1], ("ETH/USD".into(), Ok(MarketState::Open)));
        let o = r#"{"arg":{"channel":"instruments","instType":"SPOT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","state":"suspend"},{"instId":"ETH-USDT","state":"preopen"},{"instId":"SOL-USDT","state":"gone"}]}"#;
        let got = states(Venue::Okx, o);
        assert_eq!(got[0], ("BTC-USDT".into(), Ok(MarketState::Halted)));
        assert_eq!(got[1], ("ETH-USDT".into(), Ok(MarketState::Closed)));
        assert!(got[2].1.as_ref().unwrap_err().contains("gone"), "{got:?}");
        // Tickers, acks and heartbeats carry no state; nor does a venue
        // whose stream has no status channel.
        let ticker = r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","last":"1"}]}"#;
        assert!(
            Venue::Okx
                .spec()
                .stream()
                .unwrap()
                .parse_states(ticker)
                .is_empty()
        );
        assert!(states(Venue::Kraken, r#"{"channel":"heartbeat"}"#).is_empty());
        let b = r#"{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","s":"BTCUSDT"}}"#;
        assert!(
            Venue::Binance
                .spec()
                .stream()
                .unwrap()
                .parse_states(b)
                .is_empty()
        );
    }
}
