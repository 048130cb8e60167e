//! Every venue's documented error answers become typed errors: each
//! "unknown symbol" / "invalid pair" code or message is `unknown_symbol`
//! (naming the market), rate limits are `rate_limited`, other documented
//! errors are `venue_error`, and bodies we cannot read on an error status
//! are `http_status`; none is `malformed` (that label is kept for a
//! success answer whose format changed). One table over all venues, REST
//! and WebSocket.

use sibyl_feeds::error::SourceError;
use sibyl_feeds::venue::Venue;
use sibyl_feeds::ws::parse_message;

use Venue::*;

/// (venue, market, HTTP status, body, expected `reason`).
const REST: &[(Venue, &str, u16, &str, &str)] = &[
    // Binance: -1121 INVALID_SYMBOL.
    (
        Binance,
        "BTCUSDT",
        400,
        r#"{"code":-1121,"msg":"Invalid symbol."}"#,
        "unknown_symbol",
    ),
    (
        Binance,
        "BTCUSDT",
        400,
        r#"{"code":-1100,"msg":"Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."}"#,
        "venue_error",
    ),
    (
        Binance,
        "BTCUSDT",
        429,
        r#"{"code":-1003,"msg":"Too much request weight used."}"#,
        "rate_limited",
    ),
    (
        Binance,
        "BTCUSDT",
        418,
        r#"{"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000000000."}"#,
        "rate_limited",
    ),
    (
        Binance,
        "BTCUSDT",
        503,
        r#"{"code":-1008,"msg":"Spot server is currently overloaded with other requests."}"#,
        "venue_error",
    ),
    // MEXC: Binance's shape, plus 10007 "bad symbol".
    (
        Mexc,
        "BTCUSDT",
        400,
        r#"{"code":-1121,"msg":"Invalid symbol."}"#,
        "unknown_symbol",
    ),
    (
        Mexc,
        "BTCUSDT",
        400,
        r#"{"code":10007,"msg":"bad symbol"}"#,
        "unknown_symbol",
    ),
    (
        Mexc,
        "BTCUSDT",
        400,
        r#"{"code":700002,"msg":"Signature for this request is not valid."}"#,
        "venue_error",
    ),
    (
        Mexc,
        "BTCUSDT",
        429,
        r#"{"code":429,"msg":"Too Many Requests"}"#,
        "rate_limited",
    ),
    // Coinbase Exchange.
    (
        Coinbase,
        "BTC-USD",
        404,
        r#"{"message":"NotFound"}"#,
        "unknown_symbol",
    ),
    (
        Coinbase,
        "BTC-USD",
        400,
        r#"{"message":"Invalid product_id"}"#,
        "unknown_symbol",
    ),
    (
        Coinbase,
        "BTC-USD",
        429,
        r#"{"message":"Public rate limit exceeded"}"#,
        "rate_limited",
    ),
    (
        Coinbase,
        "BTC-USD",
        500,
        r#"{"message":"Internal server error"}"#,
        "venue_error",
    ),
    // Kraken: errors ride on HTTP 200.
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EQuery:Unknown asset pair"]}"#,
        "unknown_symbol",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EQuery:Invalid asset pair"]}"#,
        "unknown_symbol",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EQuery:Unknown asset"]}"#,
        "unknown_symbol",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EAPI:Rate limit exceeded"]}"#,
        "rate_limited",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EGeneral:Too many requests"]}"#,
        "rate_limited",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EService:Unavailable"]}"#,
        "venue_error",
    ),
    (
        Kraken,
        "XBTUSD",
        200,
        r#"{"error":["EService:Market in cancel_only mode"]}"#,
        "venue_error",
    ),
    // OKX: 51001, 51002, and 51000 naming instId.
    (
        Okx,
        "BTC-USDT",
        200,
        r#"{"code":"51001","data":[],"msg":"Instrument ID does not exist"}"#,
        "unknown_symbol",
    ),
    (
        Okx,
        "BTC-USDT",
        200,
        r#"{"code":"51002","data":[],"msg":"Instrument ID does not match underlying index"}"#,
        "unknown_symbol",
    ),
    (
        Okx,
        "BTC-USDT",
        400,
        r#"{"code":"51000","data":[],"msg":"Parameter instId error"}"#,
        "unknown_symbol",
    ),
    (
        Okx,
        "BTC-USDT",
        400,
        r#"{"code":"51000","data":[],"msg":"Parameter limit error"}"#,
        "venue_error",
    ),
    (
        Okx,
        "BTC-USDT",
        429,
        r#"{"code":"50011","data":[],"msg":"Too Many Requests"}"#,
        "rate_limited",
    ),
    (
        Okx,
        "BTC-USDT",
        200,
        r#"{"code":"0","msg":"","data":[]}"#,
        "unknown_symbol",
    ),
    // Bybit v5: 10001 with a symbol message, 170121.
    (
        Bybit,
        "BTCUSDT",
        200,
        r#"{"retCode":10001,"retMsg":"Not supported symbols","result":{},"retExtInfo":{},"time":1}"#,
        "unknown_symbol",
    ),
    (
        Bybit,
        "BTCUSDT",
        200,
        r#"{"retCode":10001,"retMsg":"params error: symbol invalid","result":{},"retExtInfo":{},"time":1}"#,
        "unknown_symbol",
    ),
    (
        Bybit,
        "BTCUSDT",
        200,
        r#"{"retCode":170121,"retMsg":"Invalid symbol.","result":{},"retExtInfo":{},"time":1}"#,
        "unknown_symbol",
    ),
    (
        Bybit,
        "BTCUSDT",
        200,
        r#"{"retCode":10001,"retMsg":"params error: category invalid","result":{},"retExtInfo":{},"time":1}"#,
        "venue_error",
    ),
    (
        Bybit,
        "BTCUSDT",
        200,
        r#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[]},"retExtInfo":{},"time":1}"#,
        "unknown_symbol",
    ),
    (Bybit, "BTCUSDT", 403, "access too frequent", "rate_limited"),
    // Bitstamp: the old body and the response_code one.
    (
        Bitstamp,
        "btcusd",
        404,
        r#"{"status":"error","reason":"Invalid currency pair","code":"API0003"}"#,
        "unknown_symbol",
    ),
    (
        Bitstamp,
        "btcusd",
        400,
        r#"{"status":"error","reason":"Invalid currency pair","code":"API0003"}"#,
        "unknown_symbol",
    ),
    (
        Bitstamp,
        "btcusd",
        400,
        r#"{"response_code":"400.002","response_explanation":"Request rejected due to exceeded rate limit."}"#,
        "rate_limited",
    ),
    (
        Bitstamp,
        "btcusd",
        400,
        r#"{"response_code":"400.003","response_explanation":"Trading for provided market is disabled."}"#,
        "venue_error",
    ),
    (
        Bitstamp,
        "btcusd",
        500,
        r#"{"status":"error","reason":"Internal error.","code":"API0008"}"#,
        "venue_error",
    ),
    // Gemini.
    (
        Gemini,
        "btcusd",
        400,
        r#"{"result":"error","reason":"InvalidSymbol","message":"Supplied value 'btcusdx' is not a valid symbol"}"#,
        "unknown_symbol",
    ),
    (
        Gemini,
        "btcusd",
        429,
        r#"{"result":"error","reason":"RateLimited","message":"Requests were made too frequently."}"#,
        "rate_limited",
    ),
    (
        Gemini,
        "btcusd",
        503,
        r#"{"result":"error","reason":"System","message":"Gemini is currently undergoing maintenance"}"#,
        "venue_error",
    ),
    // KuCoin: 900001, and success with no data.
    (
        Kucoin,
        "BTC-USDT",
        200,
        r#"{"code":"200000","data":null}"#,
        "unknown_symbol",
    ),
    (
        Kucoin,
        "BTC-USDT",
        400,
        r#"{"code":"900001","msg":"symbol not exists"}"#,
        "unknown_symbol",
    ),
    (
        Kucoin,
        "BTC-USDT",
        400,
        r#"{"code":"400100","msg":"This pair is not provided at present"}"#,
        "unknown_symbol",
    ),
    (
        Kucoin,
        "BTC-USDT",
        400,
        r#"{"code":"400100","msg":"Parameter error"}"#,
        "venue_error",
    ),
    (
        Kucoin,
        "BTC-USDT",
        429,
        r#"{"code":"429000","msg":"Too Many Requests"}"#,
        "rate_limited",
    ),
    // Bitfinex: ["error", CODE, MESSAGE] and the rate-limit object.
    (
        Bitfinex,
        "tBTCUSD",
        500,
        r#"["error",10020,"symbol: invalid"]"#,
        "unknown_symbol",
    ),
    (Bitfinex, "tBTCUSD", 200, "[]", "unknown_symbol"),
    (
        Bitfinex,
        "tBTCUSD",
        500,
        r#"["error",10020,"request field: invalid"]"#,
        "venue_error",
    ),
    (
        Bitfinex,
        "tBTCUSD",
        500,
        r#"["error",11010,"ratelimit: error"]"#,
        "rate_limited",
    ),
    (
        Bitfinex,
        "tBTCUSD",
        429,
        r#"{"error":"ERR_RATE_LIMIT"}"#,
        "rate_limited",
    ),
    // Gate.io.
    (
        Gateio,
        "BTC_USDT",
        400,
        r#"{"label":"INVALID_CURRENCY_PAIR","message":"Invalid currency pair BTC_USDX"}"#,
        "unknown_symbol",
    ),
    (
        Gateio,
        "BTC_USDT",
        400,
        r#"{"label":"INVALID_CURRENCY","message":"Invalid currency BTCX"}"#,
        "unknown_symbol",
    ),
    (Gateio, "BTC_USDT", 200, "[]", "unknown_symbol"),
    (
        Gateio,
        "BTC_USDT",
        429,
        r#"{"label":"TOO_MANY_REQUESTS","message":"Request Rate Limit Exceeded"}"#,
        "rate_limited",
    ),
    (
        Gateio,
        "BTC_USDT",
        500,
        r#"{"label":"SERVER_ERROR","message":"Internal server error"}"#,
        "venue_error",
    ),
    // HTX: errors ride on HTTP 200.
    (
        Htx,
        "btcusdt",
        200,
        r#"{"status":"error","err-code":"invalid-parameter","err-msg":"invalid symbol","data":null}"#,
        "unknown_symbol",
    ),
    (
        Htx,
        "btcusdt",
        200,
        r#"{"status":"error","err-code":"bad-request","err-msg":"invalid symbol","data":null}"#,
        "unknown_symbol",
    ),
    (
        Htx,
        "btcusdt",
        200,
        r#"{"status":"error","err-code":"base-symbol-error","err-msg":"The symbol is invalid","data":null}"#,
        "unknown_symbol",
    ),
    (
        Htx,
        "btcusdt",
        200,
        r#"{"status":"error","err-code":"api-limit-exceeded","err-msg":"Too many requests","data":null}"#,
        "rate_limited",
    ),
    (
        Htx,
        "btcusdt",
        200,
        r#"{"status":"error","err-code":"base-system-error","err-msg":"System error","data":null}"#,
        "venue_error",
    ),
    // Crypto.com: numeric or string codes.
    (
        Cryptocom,
        "BTC_USD",
        400,
        r#"{"id":-1,"method":"public/get-tickers","code":40004,"message":"Invalid instrument_name"}"#,
        "unknown_symbol",
    ),
    (
        Cryptocom,
        "BTC_USD",
        400,
        r#"{"id":-1,"method":"public/get-tickers","code":30003,"message":"SYMBOL_NOT_FOUND"}"#,
        "unknown_symbol",
    ),
    (
        Cryptocom,
        "BTC_USD",
        400,
        r#"{"id":-1,"method":"public/get-tickers","code":"30003","message":"SYMBOL_NOT_FOUND"}"#,
        "unknown_symbol",
    ),
    (
        Cryptocom,
        "BTC_USD",
        200,
        r#"{"id":-1,"method":"public/get-tickers","code":0,"result":{"data":[]}}"#,
        "unknown_symbol",
    ),
    (
        Cryptocom,
        "BTC_USD",
        429,
        r#"{"id":-1,"method":"public/get-tickers","code":42901,"message":"TOO_MANY_REQUESTS"}"#,
        "rate_limited",
    ),
    (
        Cryptocom,
        "BTC_USD",
        500,
        r#"{"id":-1,"method":"public/get-tickers","code":"10001","message":"SYS_ERROR"}"#,
        "venue_error",
    ),
    // Bitget: 40034 names the missing parameter, 40309 a removed symbol.
    (
        Bitget,
        "BTCUSDT",
        400,
        r#"{"code":"40034","msg":"Parameter BTCUSDX does not exist","requestTime":1,"data":null}"#,
        "unknown_symbol",
    ),
    (
        Bitget,
        "BTCUSDT",
        400,
        r#"{"code":"40309","msg":"The symbol has been removed","requestTime":1,"data":null}"#,
        "unknown_symbol",
    ),
    (
        Bitget,
        "BTCUSDT",
        200,
        r#"{"code":"00000","msg":"success","requestTime":1,"data":[]}"#,
        "unknown_symbol",
    ),
    (
        Bitget,
        "BTCUSDT",
        429,
        r#"{"code":"429","msg":"Too Many Requests","requestTime":1,"data":null}"#,
        "rate_limited",
    ),
    (
        Bitget,
        "BTCUSDT",
        400,
        r#"{"code":"40808","msg":"Parameter verification exception","requestTime":1,"data":null}"#,
        "venue_error",
    ),
];

/// (venue, stream message, expected `reason`, the market an unknown symbol names).
const STREAM: &[(Venue, &str, &str, &str)] = &[
    (
        Coinbase,
        r#"{"type":"error","message":"Failed to subscribe","reason":"BTC-USDX is not a valid product"}"#,
        "unknown_symbol",
        "BTC-USDX",
    ),
    (
        Coinbase,
        r#"{"type":"error","message":"Failed to subscribe","reason":"channel is not supported"}"#,
        "venue_error",
        "",
    ),
    (
        Kraken,
        r#"{"error":"Currency pair not supported","method":"subscribe","req_id":1,"success":false,"symbol":"BTC/USDX","time_in":"2023-11-14T22:13:20.000000Z","time_out":"2023-11-14T22:13:20.000100Z"}"#,
        "unknown_symbol",
        "BTC/USDX",
    ),
    (
        Kraken,
        r#"{"error":"Already subscribed","method":"subscribe","success":false,"symbol":"BTC/USD"}"#,
        "venue_error",
        "",
    ),
    (
        Okx,
        r#"{"event":"error","code":"60018","msg":"Wrong URL or channel:tickers,instId:BTC-USDX doesn't exist. Please use the correct URL, channel and parameters referring to API document.","connId":"a4d3ae55"}"#,
        "unknown_symbol",
        "BTC-USDX",
    ),
    (
        Okx,
        r#"{"event":"error","code":"60012","msg":"Invalid request: {\"op\": \"subscribe\"}","connId":"a4d3ae55"}"#,
        "venue_error",
        "",
    ),
];

#[test]
fn every_documented_error_body_is_typed() {
    let mut failures = Vec::new();
    for (venue, market, status, body, want) in REST {
        let got = venue.parse_ticker(*status, body.as_bytes(), market);
        match &got {
            Err(SourceError::UnknownSymbol(m)) if *want == "unknown_symbol" && m == market => {}
            Err(e) if e.reason() == *want && *want != "unknown_symbol" => {}
            other => failures.push(format!(
                "{venue} HTTP {status} {body}: want {want}, got {other:?}"
            )),
        }
    }
    for (venue, text, want, symbol) in STREAM {
        match parse_message(*venue, text) {
            Err(SourceError::UnknownSymbol(m)) if *want == "unknown_symbol" && m == *symbol => {}
            Err(e) if e.reason() == *want && *want != "unknown_symbol" => {}
            other => failures.push(format!("{venue} stream {text}: want {want}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_venue_has_unknown_symbol_and_rate_limit_rows() {
    for v in Venue::ALL {
        for reason in ["unknown_symbol", "rate_limited"] {
            assert!(
                REST.iter().any(|r| r.0 == v && r.4 == reason),
                "{v} has no {reason} row"
            );
        }
    }
}

/// Bodies that are not the venue's JSON on an error status (a proxy's
/// HTML page, an empty body) are HTTP errors on every venue, never a
/// format change and never a price.
#[test]
fn unreadable_error_bodies_are_http_errors_on_every_venue() {
    for v in Venue::ALL {
        let market = v.market("BTC", "USDT");
        for (status, body) in [
            (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            (500, ""),
            (503, "upstream connect error"),
        ] {
            match v.parse_ticker(status, body.as_bytes(), &market) {
                Err(SourceError::HttpStatus { status: s, .. }) if s == status => {}
                other => panic!("{v} HTTP {status} {body:?}: {other:?}"),
            }
        }
    }
}
