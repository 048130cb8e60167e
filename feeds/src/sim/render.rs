//! Each venue's documented response shapes, written from a [`Tick`]: the
//! mirror image of the parsers in [`crate::venue`] and [`crate::ws`]
//! (compare `fixtures/<venue>/*.json`).

use serde_json::json;

use super::model::Tick;
use crate::time::format_rfc3339_ms;
use crate::venue::Venue;

/// (HTTP status, body) of a successful ticker answer.
pub(crate) fn ticker(venue: Venue, market: &str, t: &Tick) -> (u16, String) {
    let Tick {
        bid,
        ask,
        last,
        volume,
        time_ms,
    } = t;
    let ts = time_ms.to_string();
    let body = match venue {
        Venue::Binance | Venue::Mexc => json!({
            "symbol": market, "priceChange": "0", "priceChangePercent": "0", "lastPrice": last,
            "bidPrice": bid, "bidQty": "1.5", "askPrice": ask, "askQty": "0.8", "volume": volume,
            "openTime": time_ms.saturating_sub(86_400_000), "closeTime": time_ms, "count": 1000
        })
        .to_string(),
        Venue::Coinbase => json!({
            "ask": ask, "bid": bid, "volume": volume, "trade_id": 86326522, "price": last,
            "size": "0.01", "time": format_rfc3339_ms(*time_ms)
        })
        .to_string(),
        Venue::Kraken => json!({"error": [], "result": {market: {
            "a": [ask, "1", "1.000"], "b": [bid, "2", "2.000"], "c": [last, "0.01"],
            "v": [volume, volume], "p": [last, last], "t": [100, 200], "l": [bid, bid], "h": [ask, ask], "o": last
        }}})
        .to_string(),
        Venue::Okx => json!({"code": "0", "msg": "", "data": [{
            "instType": "SPOT", "instId": market, "last": last, "lastSz": "0.01", "askPx": ask, "askSz": "0.5",
            "bidPx": bid, "bidSz": "1.2", "open24h": last, "high24h": ask, "low24h": bid, "volCcy24h": "0",
            "vol24h": volume, "ts": ts, "sodUtc0": last, "sodUtc8": last
        }]})
        .to_string(),
        Venue::Bybit => json!({"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": [{
            "symbol": market, "bid1Price": bid, "bid1Size": "1.2", "ask1Price": ask, "ask1Size": "0.5",
            "lastPrice": last, "prevPrice24h": last, "price24hPcnt": "0", "highPrice24h": ask,
            "lowPrice24h": bid, "turnover24h": "0", "volume24h": volume
        }]}, "retExtInfo": {}, "time": time_ms})
        .to_string(),
        Venue::Bitstamp => json!({
            "timestamp": (time_ms / 1000).to_string(), "open": last, "high": ask, "low": bid, "last": last,
            "volume": volume, "vwap": last, "bid": bid, "ask": ask, "side": "0", "open_24": last,
            "percent_change_24": "0.00"
        })
        .to_string(),
        Venue::Gemini => {
            let base = venue.parse_market(market).map(|(b, _)| b).unwrap_or_default();
            json!({"bid": bid, "ask": ask, "volume": {base: volume, "timestamp": time_ms}, "last": last})
                .to_string()
        }
        Venue::Kucoin => json!({"code": "200000", "data": {
            "time": time_ms, "sequence": "1", "price": last, "size": "0.1", "bestBid": bid,
            "bestBidSize": "1", "bestAsk": ask, "bestAskSize": "1"
        }})
        .to_string(),
        // JSON numbers, written from the text so nothing is lost.
        Venue::Bitfinex => format!("[{bid},12.8,{ask},9.4,0,0,{last},{volume},{ask},{bid}]"),
        Venue::Gateio => json!([{
            "currency_pair": market, "last": last, "lowest_ask": ask, "highest_bid": bid,
            "change_percentage": "0", "base_volume": volume, "quote_volume": "0", "high_24h": ask, "low_24h": bid
        }])
        .to_string(),
        Venue::Htx => format!(
            r#"{{"ch":"market.{market}.detail.merged","status":"ok","ts":{time_ms},"tick":{{"id":1,"version":1,"open":{last},"close":{last},"low":{bid},"high":{ask},"amount":{volume},"vol":0,"count":1,"bid":[{bid},1.2],"ask":[{ask},0.5]}}}}"#
        ),
        Venue::Cryptocom => json!({"id": -1, "method": "public/get-tickers", "code": 0, "result": {"data": [{
            "i": market, "h": ask, "l": bid, "a": last, "v": volume, "vv": "0", "c": "0", "b": bid, "k": ask,
            "oi": "0", "t": time_ms
        }]}})
        .to_string(),
        Venue::Bitget => json!({"code": "00000", "msg": "success", "requestTime": time_ms, "data": [{
            "symbol": market, "high24h": ask, "open": last, "low24h": bid, "lastPr": last, "quoteVolume": "0",
            "baseVolume": volume, "usdtVolume": "0", "bidPr": bid, "askPr": ask, "bidSz": "1", "askSz": "1",
            "openUtc": last, "ts": ts, "changeUtc24h": "0", "change24h": "0"
        }]})
        .to_string(),
    };
    (200, body)
}

/// (HTTP status, body) the venue answers for a market it does not list.
pub(crate) fn unknown_symbol(venue: Venue, market: &str) -> (u16, String) {
    match venue {
        Venue::Binance | Venue::Mexc => (400, json!({"code": -1121, "msg": "Invalid symbol."}).to_string()),
        Venue::Coinbase => (404, json!({"message": "NotFound"}).to_string()),
        Venue::Kraken => (200, json!({"error": ["EQuery:Unknown asset pair"]}).to_string()),
        Venue::Okx => (200, json!({"code": "51001", "data": [], "msg": "Instrument ID does not exist"}).to_string()),
        Venue::Bybit => (
            200,
            json!({"retCode": 10001, "retMsg": "Not supported symbols", "result": {}, "retExtInfo": {}, "time": 0})
                .to_string(),
        ),
        Venue::Bitstamp => (
            404,
            json!({"status": "error", "reason": "Invalid currency pair", "code": "API0003"}).to_string(),
        ),
        Venue::Gemini => (
            400,
            json!({"result": "error", "reason": "InvalidSymbol", "message": format!("Supplied value '{market}' is not a valid symbol")})
                .to_string(),
        ),
        Venue::Kucoin => (200, json!({"code": "200000", "data": null}).to_string()),
        Venue::Bitfinex => (500, r#"["error",10020,"symbol: invalid"]"#.to_string()),
        Venue::Gateio => (
            400,
            json!({"label": "INVALID_CURRENCY_PAIR", "message": format!("Invalid currency pair {market}")}).to_string(),
        ),
        Venue::Htx => (
            200,
            json!({"ts": 0, "status": "error", "err-code": "invalid-parameter", "err-msg": "invalid symbol"}).to_string(),
        ),
        Venue::Cryptocom => (
            400,
            json!({"id": -1, "method": "public/get-tickers", "code": 40004, "message": "Invalid instrument_name"})
                .to_string(),
        ),
        Venue::Bitget => (
            400,
            json!({"code": "40034", "msg": format!("Parameter {market} does not exist"), "requestTime": 0, "data": null})
                .to_string(),
        ),
    }
}

/// (HTTP status, body) of the venue's rate-limit answer.
pub(crate) fn rate_limited(venue: Venue) -> (u16, String) {
    let body = match venue {
        Venue::Binance => {
            json!({"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests per minute."})
        }
        Venue::Mexc => json!({"code": 429, "msg": "Too Many Requests"}),
        Venue::Coinbase => json!({"message": "Public rate limit exceeded"}),
        Venue::Kraken => json!({"error": ["EGeneral:Too many requests"]}),
        Venue::Okx => json!({"msg": "Too Many Requests", "code": "50011"}),
        Venue::Bybit => {
            json!({"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": 0})
        }
        Venue::Bitstamp => {
            json!({"status": "error", "reason": "Rate limit exceeded", "code": "API0001"})
        }
        Venue::Gemini => {
            json!({"result": "error", "reason": "RateLimited", "message": "Requests were made too frequently."})
        }
        Venue::Kucoin => json!({"code": "429000", "msg": "Too Many Requests"}),
        Venue::Bitfinex => json!({"error": "ERR_RATE_LIMIT"}),
        Venue::Gateio => {
            json!({"label": "TOO_MANY_REQUESTS", "message": "Request Rate Limit Exceeded"})
        }
        Venue::Htx => {
            json!({"status": "error", "err-code": "api-limit-exceeded", "err-msg": "Too many requests"})
        }
        Venue::Cryptocom => {
            json!({"id": -1, "method": "public/get-tickers", "code": 42901, "message": "TOO_MANY_REQUESTS"})
        }
        Venue::Bitget => {
            json!({"code": "429", "msg": "Too Many Requests", "requestTime": 0, "data": null})
        }
    };
    (429, body.to_string())
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

// ---------------------------------------------------------------- WebSocket

/// One ticker message in the venue's stream format. `symbol` is the stream's
/// own symbol (Binance lower case, Kraken "BTC/USD").
pub(crate) fn ws_ticker(
    venue: Venue,
    symbol: &str,
    market: &str,
    t: &Tick,
    seq: u64,
) -> Option<String> {
    let Tick {
        bid,
        ask,
        last,
        volume,
        time_ms,
    } = t;
    Some(match venue {
        Venue::Binance => json!({"stream": format!("{symbol}@ticker"), "data": {
            "e": "24hrTicker", "E": time_ms, "s": market, "p": "0", "P": "0", "c": last, "Q": "0.01",
            "b": bid, "B": "1", "a": ask, "A": "1", "o": last, "h": ask, "l": bid, "v": volume, "q": "0"
        }})
        .to_string(),
        Venue::Coinbase => json!({
            "type": "ticker", "sequence": seq, "product_id": symbol, "price": last, "open_24h": last,
            "volume_24h": volume, "low_24h": bid, "high_24h": ask, "volume_30d": volume, "best_bid": bid,
            "best_bid_size": "1", "best_ask": ask, "best_ask_size": "1", "side": "buy",
            "time": format_rfc3339_ms(*time_ms), "trade_id": seq, "last_size": "0.01"
        })
        .to_string(),
        Venue::Kraken => format!(
            r#"{{"channel":"ticker","type":"update","data":[{{"symbol":"{symbol}","bid":{bid},"bid_qty":1.0,"ask":{ask},"ask_qty":1.0,"last":{last},"volume":{volume},"vwap":{last},"low":{bid},"high":{ask},"change":0.0,"change_pct":0.0}}]}}"#
        ),
        Venue::Okx => json!({"arg": {"channel": "tickers", "instId": symbol}, "data": [{
            "instType": "SPOT", "instId": symbol, "last": last, "lastSz": "0.01", "askPx": ask, "askSz": "1",
            "bidPx": bid, "bidSz": "1", "open24h": last, "high24h": ask, "low24h": bid, "volCcy24h": "0",
            "vol24h": volume, "ts": time_ms.to_string(), "sodUtc0": last, "sodUtc8": last
        }]})
        .to_string(),
        _ => return None,
    })
}
