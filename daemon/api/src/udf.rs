//! TradingView's UDF protocol (`/udf/config`, `/udf/symbols`,
//! `/udf/history`), so charting front-ends read the history as it is.
//!
//! UDF wants prices as JSON numbers in units; they are the fixed-point
//! values divided by `10^decimals` (an `f64`, for charts only: verify with
//! `/v1/feeds/{id}/latest`). Times are seconds. Buckets without a report are
//! left out, as UDF expects (the chart shows the gap); `/v1/feeds/{id}/history`
//! lists them.

use super::handlers::{Params, int_param, params};
use super::{ApiError, ApiState};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sibyl_aggregator::FeedId;

/// Resolutions offered: seconds, minutes, one day.
const RESOLUTIONS: &[&str] = &["1S", "5S", "15S", "1", "5", "15", "60", "240", "1D"];

/// Most bars one `/udf/history` answer holds.
const MAX_BARS: usize = 10_000;

pub(super) async fn config() -> Json<Value> {
    Json(json!({
        "supported_resolutions": RESOLUTIONS,
        "supports_search": false,
        "supports_group_request": false,
        "supports_marks": false,
        "supports_timescale_marks": false,
        "supports_time": false,
        "exchanges": [{"value": "Sibyl", "name": "Sibyl", "desc": "Sibyl oracle"}],
        "symbols_types": [{"name": "crypto", "value": "crypto"}],
    }))
}

async fn feed_of(st: &ApiState, p: &Params) -> Result<(FeedId, u8), ApiError> {
    let Some(symbol) = p.get("symbol") else {
        return Err(ApiError::bad_parameter(
            "`symbol` is required (a feed id, e.g. BTC-USD)",
        ));
    };
    let feed = FeedId::new(symbol.as_str())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_feed_id", format!("{e}")))?;
    let known = st.inner.config.feeds.get(&feed).map(|f| f.decimals);
    match known {
        Some(d) => Ok((feed, d)),
        None if st.inner.store.has_feed(feed.clone()).await? => Ok((feed, 0)),
        None => Err(ApiError::not_found(
            "unknown_feed",
            format!("unknown symbol {symbol:?}; GET /v1/feeds lists the feeds"),
        )),
    }
}

pub(super) async fn symbols(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["symbol"])?;
    let (feed, decimals) = feed_of(&st, &p).await?;
    Ok(Json(json!({
        "name": feed.as_str(),
        "ticker": feed.as_str(),
        "description": format!("{} (Sibyl oracle, threshold-signed)", feed.as_str()),
        "type": "crypto",
        "session": "24x7",
        "timezone": "Etc/UTC",
        "exchange": "Sibyl",
        "listed_exchange": "Sibyl",
        "minmov": 1,
        "pricescale": 10u64.saturating_pow(u32::from(decimals.min(18))),
        "has_intraday": true,
        "has_seconds": true,
        "has_daily": true,
        "seconds_multipliers": ["1", "5", "15"],
        "supported_resolutions": RESOLUTIONS,
        "has_no_volume": true,
        "volume_precision": 0,
        "data_status": "streaming",
        "format": "price",
    })))
}

/// A UDF resolution in milliseconds: `"1S"`, `"15S"`, `"5"` (minutes), `"1D"`.
fn resolution_ms(r: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_parameter(format!(
            "`resolution` must be one of {}, got {r:?}",
            RESOLUTIONS.join(", ")
        ))
    };
    let (num, unit) = match r.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => r.split_at(i),
        None => (r, ""),
    };
    let n: u64 = if num.is_empty() {
        1
    } else {
        num.parse().map_err(|_| bad())?
    };
    let unit_ms = match unit {
        "" => 60_000,
        "S" => 1_000,
        "D" => 86_400_000,
        "W" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms == 0 {
        return Err(bad());
    }
    Ok(ms)
}

pub(super) async fn history(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["symbol", "resolution", "from", "to", "countback"])?;
    let (feed, decimals) = feed_of(&st, &p).await?;
    let res = resolution_ms(p.get("resolution").map_or("1", String::as_str))?;
    let sec = |name: &str| -> Result<u64, ApiError> {
        let v = p
            .get(name)
            .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` (seconds) is required")))?;
        int_param(name, v, "seconds since the Unix epoch").map(|s| s.saturating_mul(1000))
    };
    let (from, to) = (sec("from")?, sec("to")?);
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_range",
            format!("`from` ({from} ms) is after `to` ({to} ms)"),
        ));
    }
    let countback = p
        .get("countback")
        .map(|v| int_param("countback", v, "a number of bars"))
        .transpose()?;
    let (candles, _) = st
        .inner
        .store
        .candles(feed.clone(), from, to, res, MAX_BARS)
        .await?;
    let skip = match countback {
        Some(n) => candles.len().saturating_sub(n as usize),
        None => 0,
    };
    let candles = &candles[skip..];
    if candles.is_empty() {
        return Ok(Json(json!({"s": "no_data"})));
    }
    let scale = 10f64.powi(i32::from(decimals));
    let units = |v: i128| v as f64 / scale;
    Ok(Json(json!({
        "s": "ok",
        "t": candles.iter().map(|c| c.start_ms / 1000).collect::<Vec<_>>(),
        "o": candles.iter().map(|c| units(c.open)).collect::<Vec<_>>(),
        "h": candles.iter().map(|c| units(c.high)).collect::<Vec<_>>(),
        "l": candles.iter().map(|c| units(c.low)).collect::<Vec<_>>(),
        "c": candles.iter().map(|c| units(c.close)).collect::<Vec<_>>(),
        "v": candles.iter().map(|c| c.count).collect::<Vec<_>>(),
    })))
}
