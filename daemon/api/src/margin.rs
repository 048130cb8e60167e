//! `/v1/margin/*`: the embedded margin engine over HTTP.
//!
//! ```text
//!   GET  (public) ──► MarginHandle::read() (engine lock, no I/O) ─┐
//!                 ──► Readers (stored events: liquidations, fund) ─┤──► JSON
//!   POST (bearer) ──► MarginHandle::command() ──► margin service ──┘
//!                     (engine accepts ─► stored as an input + its events)
//! ```
//!
//! Commands go through the margin service, the same path the devnet's demo
//! book takes, so every accepted one is stored as an engine input and
//! `sibyl replay` reproduces it; a refused one changes nothing and stores
//! nothing. Money, prices, sizes and Greeks are exact decimal strings of the
//! engine's fixed-point integers (money 6 decimals, the rest 8), never JSON
//! numbers, and amounts in request bodies must be decimal strings too.

use super::{ApiError, ApiState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sibyl_margin::engine::{GREEK_SCALE, MarketState};
use sibyl_margin::fixed::{MONEY_SCALE, QTY_SCALE, VALUE_DIVISOR};
use sibyl_margin::options::OptionKind;
use sibyl_margin::{
    AccountId, Command, EngineError, Event, EventRecord, Greeks, Health, MarginMode, MarketKind,
    Side, Unit,
};
use sibyl_node::margin_svc::{MarginError, MarginHandle};
use sibyl_node::store::MarginEventRow;
use std::collections::BTreeMap;

const MONEY_DIGITS: u32 = 6;
const PRICE_DIGITS: u32 = 8;
const QTY_DIGITS: u32 = 8;
const GREEK_DIGITS: u32 = 8;
/// Most rows one list route returns.
const MAX_LIMIT: usize = 1_000;

// ---------------------------------------------------------------------------
// Decimal strings
// ---------------------------------------------------------------------------

/// `v / 10^digits` as an exact decimal string, e.g. `-12.500000`.
pub fn decimal(v: i128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let abs = v.unsigned_abs();
    let sign = if v < 0 { "-" } else { "" };
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

fn money(v: i128) -> String {
    decimal(v, MONEY_DIGITS)
}

fn price(v: i128) -> String {
    decimal(v, PRICE_DIGITS)
}

fn qty(v: i128) -> String {
    decimal(v, QTY_DIGITS)
}

/// Parses a decimal string (`"1500"`, `"-0.25"`, `"1e3"` is refused) into an
/// integer with `digits` decimals; more decimals than that, or a value out
/// of range, is refused with a message naming `field`.
pub fn parse_decimal(s: &str, digits: u32, field: &str) -> Result<i128, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_parameter(format!(
            "`{field}` = {s:?} {why}; write a decimal string such as \"1500.25\" (at most {digits} decimals)"
        ))
    };
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad("is not a number"));
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a decimal number"));
    }
    if frac.len() > digits as usize {
        return Err(bad("has too many decimals"));
    }
    let out_of_range = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "overflow",
            format!("`{field}` = {s:?} is out of range"),
        )
    };
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(out_of_range)?;
    }
    let pad = 10i128
        .checked_pow(digits - frac.len() as u32)
        .ok_or_else(out_of_range)?;
    v = v.checked_mul(pad).ok_or_else(out_of_range)?;
    Ok(if neg { -v } else { v })
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn engine_error(e: &EngineError) -> ApiError {
    use EngineError as E;
    let (status, code) = match e {
        E::UnknownFeed { .. } => (StatusCode::NOT_FOUND, "unknown_feed"),
        E::UnknownMarket { .. } => (StatusCode::NOT_FOUND, "unknown_market"),
        E::UnknownAsset { .. } => (StatusCode::NOT_FOUND, "unknown_asset"),
        E::UnknownAccount { .. } => (StatusCode::NOT_FOUND, "unknown_account"),
        E::NoPosition { .. } => (StatusCode::NOT_FOUND, "no_position"),
        E::AccountExists { .. } => (StatusCode::CONFLICT, "account_exists"),
        E::NonPositive { .. } | E::NonPositivePrice { .. } => {
            (StatusCode::BAD_REQUEST, "not_positive")
        }
        E::InvalidConfig { .. } => (StatusCode::BAD_REQUEST, "invalid_config"),
        E::Overflow { .. } => (StatusCode::BAD_REQUEST, "overflow"),
        E::InsufficientMargin { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_margin"),
        E::InsufficientBalance { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_balance"),
        E::ExceedsPosition { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "exceeds_position"),
        E::GuardUp { .. } => (StatusCode::CONFLICT, "guard_up"),
        E::NoPrice { .. } => (StatusCode::CONFLICT, "no_price"),
        E::Expired { .. } | E::Settled { .. } => (StatusCode::CONFLICT, "market_closed"),
        E::MarginModeConflict { .. } => (StatusCode::CONFLICT, "margin_mode_conflict"),
        E::Pricing { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "pricing_failed"),
        E::OutOfOrderPrice { .. } | E::DuplicateFeed { .. } | E::SnapshotVersion { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "engine_error")
        }
    };
    ApiError::new(status, code, e.to_string())
}

fn margin_error(e: MarginError) -> ApiError {
    match e {
        MarginError::Engine(e) => engine_error(&e),
        MarginError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "margin_stopped",
            "the margin engine has stopped; see the node's log",
        ),
        other => {
            tracing::error!(error = %other, "margin command failed after the engine accepted it");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "margin_store",
                format!("the command was applied but could not be stored: {other}"),
            )
        }
    }
}

fn handle(st: &ApiState) -> Result<&MarginHandle, ApiError> {
    st.inner.margin.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "margin_disabled",
            "this API instance has no margin engine",
        )
    })
}

fn account_param(s: &str) -> Result<AccountId, ApiError> {
    s.parse::<AccountId>().map_err(|_| {
        ApiError::bad_parameter(format!(
            "account id {s:?} is not a number in 0..={}",
            u64::MAX
        ))
    })
}

use super::handlers::{Params, params};

fn limit_param(p: &Params, default: usize) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_parameter(format!(
                "`limit` = {s:?} must be a whole number in 1..={MAX_LIMIT}"
            ))),
        },
    }
}

/// A JSON body of type `T`; a malformed one is a 400 that says why.
fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let b = b.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_body",
            format!("cannot read the request body: {}", e.body_text()),
        )
    })?;
    let b: &[u8] = if b.iter().all(|c| c.is_ascii_whitespace()) {
        b"{}"
    } else {
        &b
    };
    serde_json::from_slice(b).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("malformed JSON body: {e}"),
        )
    })
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

fn unit_json(unit: &Unit) -> Value {
    match unit {
        Unit::Cross => json!({ "mode": "cross", "market": null }),
        Unit::Isolated { market } => json!({ "mode": "isolated", "market": market }),
    }
}

/// Equity / maintenance as a decimal string (6 decimals), `None` without a
/// maintenance requirement.
fn margin_ratio(h: &Health) -> Option<String> {
    (h.maintenance > 0).then(|| {
        decimal(
            h.equity.saturating_mul(MONEY_SCALE) / h.maintenance,
            MONEY_DIGITS,
        )
    })
}

fn health_json(h: &Health) -> Value {
    let status = if h.equity < h.maintenance || h.equity < 0 {
        "below_maintenance"
    } else if h.equity < h.initial {
        "margin_call"
    } else {
        "healthy"
    };
    json!({
        "equity": money(h.equity),
        "initial": money(h.initial),
        "maintenance": money(h.maintenance),
        "notional": money(h.notional),
        "margin_ratio": margin_ratio(h),
        "portfolio_margin": h.portfolio,
        "status": status,
    })
}

fn greeks_json(g: &Greeks) -> Value {
    json!({
        "delta": decimal(g.delta, GREEK_DIGITS),
        "gamma": decimal(g.gamma, GREEK_DIGITS),
        "vega": decimal(g.vega, GREEK_DIGITS),
        "theta": decimal(g.theta, GREEK_DIGITS),
        "rho": decimal(g.rho, GREEK_DIGITS),
    })
}

fn add_greeks(a: &mut Greeks, b: &Greeks) {
    a.delta = a.delta.saturating_add(b.delta);
    a.gamma = a.gamma.saturating_add(b.gamma);
    a.vega = a.vega.saturating_add(b.vega);
    a.theta = a.theta.saturating_add(b.theta);
    a.rho = a.rho.saturating_add(b.rho);
}

fn scale_greeks(size: i128, g: &Greeks) -> Greeks {
    let s = |x: i128| x.checked_mul(size).map_or(0, |p| p.div_euclid(QTY_SCALE));
    Greeks {
        delta: s(g.delta),
        gamma: s(g.gamma),
        vega: s(g.vega),
        theta: s(g.theta),
        rho: s(g.rho),
    }
}

fn market_kind_json(k: &MarketKind) -> Value {
    match k {
        MarketKind::Perpetual => json!({ "type": "perpetual" }),
        MarketKind::Future { expiry_ms } => json!({ "type": "future", "expiry_ms": expiry_ms }),
        MarketKind::Option {
            kind,
            strike,
            expiry_ms,
            ..
        } => json!({
            "type": "option",
            "option": match kind { OptionKind::Call => "call", OptionKind::Put => "put" },
            "strike": price(*strike),
            "expiry_ms": expiry_ms,
        }),
    }
}

/// Variant name of a serde externally tagged enum value.
fn tag(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

fn guard_json<T: serde::Serialize + std::fmt::Display>(reason: &T) -> Value {
    let detail = serde_json::to_value(reason).unwrap_or(Value::Null);
    json!({ "reason": tag(&detail), "message": reason.to_string() })
}

/// An event as JSON with decimal strings; kinds without a dedicated shape
/// carry only their kind.
fn event_json(e: &EventRecord, round: Option<u64>) -> Value {
    let mut v = match &e.event {
        Event::AccountCreated { account } => json!({ "account": account }),
        Event::Deposited {
            account,
            asset,
            amount,
        } => json!({ "account": account, "asset": asset, "amount": asset_amount(asset, *amount) }),
        Event::Withdrawn {
            account,
            asset,
            amount,
            health_after,
        } => json!({ "account": account, "asset": asset, "amount": asset_amount(asset, *amount),
                     "health_after": health_json(health_after) }),
        Event::Filled {
            account,
            market,
            size,
            price: px,
            fee,
            realized,
            reason,
        } => json!({ "account": account, "market": market, "size": qty(*size), "price": price(*px),
                     "fee": money(*fee), "realized": money(*realized),
                     "reason": tag(&serde_json::to_value(reason).unwrap_or(Value::Null)) }),
        Event::MarginCall {
            account,
            unit,
            health,
        }
        | Event::MarginCallCleared {
            account,
            unit,
            health,
        } => json!({ "account": account, "unit": unit_json(unit), "health": health_json(health) }),
        Event::LiquidationDeferred {
            account,
            unit,
            feed,
            reason,
            health,
        } => json!({ "account": account, "unit": unit_json(unit), "feed": feed,
                     "guard": guard_json(reason), "health": health_json(health) }),
        Event::Liquidated {
            account,
            unit,
            kind,
            before,
            after,
            closed,
            penalty,
            to_liquidator,
            to_insurance,
            note,
        } => {
            let (k, fraction) = match kind {
                sibyl_margin::LiquidationKind::Partial { fraction_ppm } => (
                    "partial",
                    Some(decimal(i128::from(*fraction_ppm), MONEY_DIGITS)),
                ),
                sibyl_margin::LiquidationKind::Full => ("full", None),
            };
            json!({
                "account": account, "unit": unit_json(unit), "liquidation": k, "fraction": fraction,
                "before": health_json(before), "after": health_json(after),
                "closed": closed.iter().map(|c| json!({
                    "market": c.market, "size": qty(c.size), "price": price(c.price) })).collect::<Vec<_>>(),
                "penalty": money(*penalty), "to_liquidator": money(*to_liquidator),
                "to_insurance": money(*to_insurance), "note": note,
            })
        }
        Event::InsuranceFund {
            delta,
            balance,
            reason,
        } => {
            let r = serde_json::to_value(reason).unwrap_or(Value::Null);
            let account = r
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|v| v.get("account"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({ "delta": money(*delta), "balance": money(*balance), "reason": tag(&r), "account": account })
        }
        Event::BadDebt {
            account,
            unit,
            deficit,
            from_insurance,
            from_deleveraging,
            from_venue,
        } => json!({ "account": account, "unit": unit_json(unit), "deficit": money(*deficit),
                     "from_insurance": money(*from_insurance),
                     "from_deleveraging": money(*from_deleveraging), "from_venue": money(*from_venue) }),
        Event::GuardRaised { feed, reason } => {
            json!({ "feed": feed, "guard": guard_json(reason) })
        }
        Event::GuardCleared { feed } => json!({ "feed": feed }),
        _ => json!({}),
    };
    let kind = tag(&serde_json::to_value(&e.event).unwrap_or(Value::Null));
    if let Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(e.seq));
        m.insert("at_ms".into(), json!(e.at_ms));
        m.insert("kind".into(), json!(kind));
        if round.is_some() {
            m.insert("round".into(), json!(round));
        }
    }
    v
}

fn asset_amount(asset: &str, amount: i128) -> String {
    if asset == sibyl_margin::fixed::QUOTE_ASSET {
        money(amount)
    } else {
        qty(amount)
    }
}

fn stored_events(rows: Vec<MarginEventRow>) -> Vec<Value> {
    rows.iter()
        .filter_map(|r| match serde_json::from_str::<EventRecord>(&r.body) {
            Ok(e) => Some(event_json(&e, r.round)),
            Err(err) => {
                tracing::warn!(seq = r.seq, error = %err, "stored margin event does not parse");
                None
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/// `GET /v1/margin/accounts/{account}`: cash, collateral and every margin
/// unit's health with its mode.
pub(super) async fn account(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = account_param(&id)?;
    let h = handle(&st)?;
    let guard = h.read();
    let engine = &guard.engine;
    let views = engine.account_view(id).map_err(|e| engine_error(&e))?;
    let s = engine.state();
    let acct = s
        .accounts
        .get(&id)
        .ok_or_else(|| engine_error(&EngineError::UnknownAccount { account: id }))?;
    let units: Vec<Value> = views
        .iter()
        .map(|v| {
            let mut u = unit_json(&v.unit);
            u["health"] = health_json(&v.health);
            u["in_margin_call"] = json!(s.margin_calls.contains(&(id, v.unit.clone())));
            u["liquidation_deferred"] = json!(s.deferred.contains(&(id, v.unit.clone())));
            u["positions"] = json!(
                acct.positions
                    .iter()
                    .filter(|(m, p)| match &v.unit {
                        Unit::Cross => p.isolated.is_none(),
                        Unit::Isolated { market } => *m == market,
                    })
                    .count()
            );
            u
        })
        .collect();
    let cross = views
        .iter()
        .find(|v| v.unit == Unit::Cross)
        .map(|v| health_json(&v.health));
    Ok(Json(json!({
        "account": id,
        "engine_time_ms": engine.now_ms(),
        "cash": money(acct.cash),
        "collateral": acct.collateral.iter().map(|(a, q)| json!({ "asset": a, "amount": qty(*q) })).collect::<Vec<_>>(),
        "health": cross,
        "units": units,
    })))
}

/// `GET /v1/margin/accounts/{account}/positions`: every position with its
/// mark, entry price, PnL and Greeks.
pub(super) async fn positions(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = account_param(&id)?;
    let h = handle(&st)?;
    let guard = h.read();
    let s = guard.engine.state();
    let acct = s
        .accounts
        .get(&id)
        .ok_or_else(|| engine_error(&EngineError::UnknownAccount { account: id }))?;
    let mut out = Vec::new();
    for (market, p) in &acct.positions {
        let ms: Option<&MarketState> = s.markets.get(market);
        let mark = ms.and_then(|m| m.mark.as_ref());
        let entry = (p.size != 0)
            .then(|| {
                p.quote
                    .checked_neg()?
                    .checked_mul(VALUE_DIVISOR)
                    .map(|x| x / p.size)
            })
            .flatten();
        let value = mark.and_then(|m| p.size.checked_mul(m.price).map(|x| x / VALUE_DIVISOR));
        let pnl = value.and_then(|v| v.checked_add(p.quote));
        out.push(json!({
            "market": market,
            "feed": ms.map(|m| m.config.feed.clone()),
            "instrument": ms.map(|m| market_kind_json(&m.config.kind)),
            "side": if p.size >= 0 { "long" } else { "short" },
            "size": qty(p.size),
            "mode": if p.isolated.is_some() { "isolated" } else { "cross" },
            "isolated_margin": p.isolated.map(money),
            "entry_price": entry.map(price),
            "mark_price": mark.map(|m| price(m.price)),
            "underlying_price": mark.map(|m| price(m.underlying)),
            "value": value.map(money),
            "unrealized_pnl": pnl.map(money),
            "greeks": mark.map(|m| greeks_json(&scale_greeks(p.size, &m.greeks))),
        }));
    }
    Ok(Json(json!({ "account": id, "positions": out })))
}

/// `GET /v1/margin/accounts/{account}/greeks`: Greeks per underlying feed,
/// summed over the account and per margin unit.
pub(super) async fn greeks(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = account_param(&id)?;
    let h = handle(&st)?;
    let guard = h.read();
    let views = guard
        .engine
        .account_view(id)
        .map_err(|e| engine_error(&e))?;
    let mut total: BTreeMap<String, Greeks> = BTreeMap::new();
    let mut units = Vec::new();
    for v in &views {
        for (feed, g) in &v.greeks {
            add_greeks(total.entry(feed.clone()).or_default(), g);
        }
        let mut u = unit_json(&v.unit);
        u["greeks"] = v
            .greeks
            .iter()
            .map(|(f, g)| (f.clone(), greeks_json(g)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        units.push(u);
    }
    Ok(Json(json!({
        "account": id,
        "scale_note": format!("8 decimals (GREEK_SCALE = {GREEK_SCALE}); delta in underlying units, vega per 1.00 vol, theta per year, rho per 1.00 rate"),
        "greeks": total.iter().map(|(f, g)| (f.clone(), greeks_json(g))).collect::<serde_json::Map<_, _>>(),
        "units": units,
    })))
}

/// `GET /v1/margin/at-risk?limit=N`: margin units closest to liquidation
/// (lowest equity / maintenance first).
pub(super) async fn at_risk(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["limit"])?;
    let limit = limit_param(&p, 20)?;
    let h = handle(&st)?;
    let ranked = h.closest_to_liquidation(limit);
    let guard = h.read();
    let s = guard.engine.state();
    let rows: Vec<Value> = ranked
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut u = unit_json(&r.unit);
            u["rank"] = json!(i + 1);
            u["account"] = json!(r.account);
            u["health"] = health_json(&r.health);
            u["in_margin_call"] = json!(s.margin_calls.contains(&(r.account, r.unit.clone())));
            u["liquidation_deferred"] = json!(s.deferred.contains(&(r.account, r.unit.clone())));
            u
        })
        .collect();
    Ok(Json(json!({
        "engine_time_ms": guard.engine.now_ms(),
        "accounts_total": s.accounts.len(),
        "units": rows,
    })))
}

/// `GET /v1/margin/liquidations?limit=N&before=SEQ`: stored liquidations,
/// newest first; `next_before` pages further back.
pub(super) async fn liquidations(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["limit", "before"])?;
    let limit = limit_param(&p, 50)?;
    let before = match p.get("before") {
        None => None,
        Some(s) => Some(super::handlers::int_param(
            "before",
            s,
            "an event sequence number (the `next_before` of the previous page)",
        )?),
    };
    handle(&st)?;
    let rows = st
        .readers()
        .read(move |db| db.margin_events_of_kind_before("liquidated", before, limit + 1))
        .await?;
    let more = rows.len() > limit;
    let rows: Vec<MarginEventRow> = rows.into_iter().take(limit).collect();
    let next_before = if more {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(json!({
        "liquidations": stored_events(rows),
        "next_before": next_before,
    })))
}

/// `GET /v1/margin/insurance`: the insurance fund, fees and the fund's
/// recent movements.
pub(super) async fn insurance(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["limit"])?;
    let limit = limit_param(&p, 20)?;
    let h = handle(&st)?;
    let (balance, fees, now, accounts) = {
        let g = h.read();
        let s = g.engine.state();
        (
            s.insurance_fund,
            s.fees,
            g.engine.now_ms(),
            s.accounts.len(),
        )
    };
    let rows = st
        .readers()
        .read(move |db| db.margin_events_of_kind_before("insurance_fund", None, limit))
        .await?;
    Ok(Json(json!({
        "balance": money(balance),
        "fees": money(fees),
        "accounts": accounts,
        "engine_time_ms": now,
        "recent": stored_events(rows),
    })))
}

/// `GET /v1/margin/markets`: every market with its mark and requirements,
/// and every feed with its last price and guard (why new risk is refused
/// and liquidations wait).
pub(super) async fn markets(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let h = handle(&st)?;
    let g = h.read();
    let s = g.engine.state();
    let markets: Vec<Value> = s
        .markets
        .iter()
        .map(|(name, m)| {
            let feed = s.feeds.get(&m.config.feed);
            json!({
                "market": name,
                "feed": m.config.feed,
                "instrument": market_kind_json(&m.config.kind),
                "initial_rate": decimal(i128::from(m.config.initial_ppm), MONEY_DIGITS),
                "maintenance_rate": decimal(i128::from(m.config.maintenance_ppm), MONEY_DIGITS),
                "mark_price": m.mark.as_ref().map(|k| price(k.price)),
                "underlying_price": m.mark.as_ref().map(|k| price(k.underlying)),
                "greeks": m.mark.as_ref().map(|k| greeks_json(&k.greeks)),
                "settled_price": m.settled.map(price),
                "guarded": feed.is_none_or(|f| f.guard.is_some()),
                "guard": feed.and_then(|f| f.guard.as_ref()).map(guard_json),
            })
        })
        .collect();
    let feeds: Vec<Value> = s
        .feeds
        .iter()
        .map(|(name, f)| {
            json!({
                "feed": name,
                "price": f.last.as_ref().map(|l| price(l.price)),
                "confidence": f.last.as_ref().map(|l| price(l.confidence)),
                "timestamp_ms": f.last.as_ref().map(|l| l.timestamp_ms),
                "round": f.last.as_ref().map(|l| l.round),
                "max_staleness_ms": f.config.max_staleness_ms,
                "guard": f.guard.as_ref().map(guard_json),
            })
        })
        .collect();
    Ok(Json(json!({
        "engine_time_ms": g.engine.now_ms(),
        "markets": markets,
        "feeds": feeds,
    })))
}

// ---------------------------------------------------------------------------
// Admin commands
// ---------------------------------------------------------------------------

/// Runs a command through the margin service; answers with its events and
/// the account's health after it.
async fn run(
    st: &ApiState,
    account: Option<AccountId>,
    command: Command,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let h = handle(st)?;
    let events = h.command(command).await.map_err(margin_error)?;
    let health = account.and_then(|id| {
        let g = h.read();
        let views = g.engine.account_view(id).ok()?;
        views
            .iter()
            .find(|v| v.unit == Unit::Cross)
            .map(|v| health_json(&v.health))
    });
    let events: Vec<Value> = events.iter().map(|e| event_json(e, None)).collect();
    Ok((
        status,
        Json(json!({ "account": account, "events": events, "health": health })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// Optional id; default: one more than the highest id in use.
    account: Option<AccountId>,
}

/// `POST /v1/margin/accounts` `{"account": 42}` (id optional).
pub(super) async fn create_account(
    State(st): State<ApiState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b: CreateBody = body(b)?;
    let h = handle(&st)?;
    let id = match b.account {
        Some(id) => id,
        None => {
            let g = h.read();
            let last = g.engine.state().accounts.keys().next_back().copied();
            match last {
                None => 1,
                Some(l) => l.checked_add(1).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "account_exists",
                        "no free account id above the highest; give `account` explicitly",
                    )
                })?,
            }
        }
    };
    run(
        &st,
        Some(id),
        Command::CreateAccount { account: id },
        StatusCode::CREATED,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferBody {
    /// `USD` (cash, 6 decimals) or a collateral asset (8 decimals).
    asset: Option<String>,
    amount: String,
}

fn transfer(b: TransferBody) -> Result<(String, i128), ApiError> {
    let asset = b
        .asset
        .unwrap_or_else(|| sibyl_margin::fixed::QUOTE_ASSET.into());
    let digits = if asset == sibyl_margin::fixed::QUOTE_ASSET {
        MONEY_DIGITS
    } else {
        QTY_DIGITS
    };
    let amount = parse_decimal(&b.amount, digits, "amount")?;
    Ok((asset, amount))
}

/// `POST /v1/margin/accounts/{account}/deposit` `{"asset": "USD", "amount": "1000"}`.
pub(super) async fn deposit(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let account = account_param(&id)?;
    let (asset, amount) = transfer(body(b)?)?;
    run(
        &st,
        Some(account),
        Command::Deposit {
            account,
            asset,
            amount,
        },
        StatusCode::OK,
    )
    .await
}

/// `POST /v1/margin/accounts/{account}/withdraw`: refused if it would leave
/// the account below its initial requirement.
pub(super) async fn withdraw(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let account = account_param(&id)?;
    let (asset, amount) = transfer(body(b)?)?;
    run(
        &st,
        Some(account),
        Command::Withdraw {
            account,
            asset,
            amount,
        },
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModeBody {
    Cross,
    Isolated,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenBody {
    market: String,
    side: Side,
    size: String,
    /// `cross` (default) or `isolated`.
    mode: Option<ModeBody>,
    /// Money moved from cash into the isolated pool (isolated only).
    isolated_margin: Option<String>,
}

/// `POST /v1/margin/accounts/{account}/positions`: buy or sell at the mark.
pub(super) async fn open(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let account = account_param(&id)?;
    let b: OpenBody = body(b)?;
    let size = parse_decimal(&b.size, QTY_DIGITS, "size")?;
    let margin = match (b.mode.unwrap_or(ModeBody::Cross), &b.isolated_margin) {
        (ModeBody::Cross, None) => MarginMode::Cross,
        (ModeBody::Cross, Some(_)) => {
            return Err(ApiError::bad_parameter(
                "`isolated_margin` is only for `\"mode\": \"isolated\"`",
            ));
        }
        (ModeBody::Isolated, m) => MarginMode::Isolated {
            collateral: match m {
                Some(m) => parse_decimal(m, MONEY_DIGITS, "isolated_margin")?,
                None => 0,
            },
        },
    };
    run(
        &st,
        Some(account),
        Command::Open {
            account,
            market: b.market,
            side: b.side,
            size,
            margin,
        },
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseBody {
    /// Size to close; absent: the whole position.
    size: Option<String>,
}

/// `POST /v1/margin/accounts/{account}/positions/{market}/close`.
pub(super) async fn close(
    State(st): State<ApiState>,
    Path((id, market)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let account = account_param(&id)?;
    let b: CloseBody = body(b)?;
    let size = b
        .size
        .as_deref()
        .map(|s| parse_decimal(s, QTY_DIGITS, "size"))
        .transpose()?;
    run(
        &st,
        Some(account),
        Command::Close {
            account,
            market,
            size,
        },
        StatusCode::OK,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_margin::fixed::PRICE_SCALE;

    #[test]
    fn decimals_round_trip_exactly() {
        assert_eq!(decimal(0, 6), "0.000000");
        assert_eq!(decimal(-1, 6), "-0.000001");
        assert_eq!(decimal(1_500_250_000, 6), "1500.250000");
        assert_eq!(decimal(i128::MIN, 8).len(), 41);
        for (s, v) in [
            ("1500.25", 1_500_250_000),
            ("-0.000001", -1),
            ("7", 7_000_000),
            (".5", 500_000),
            ("+3.", 3_000_000),
        ] {
            assert_eq!(parse_decimal(s, 6, "x").expect(s), v, "{s}");
        }
        for s in ["", "-", ".", "1e3", "1.0000001", "0x10", "1,5", " 1", "NaN"] {
            let e = parse_decimal(s, 6, "amount").expect_err(s);
            assert_eq!(e.code, "bad_parameter", "{s}");
            assert!(e.message.contains("`amount`"), "{}", e.message);
        }
        let e = parse_decimal(&"9".repeat(40), 6, "size").expect_err("overflow");
        assert_eq!(e.code, "overflow");
        assert_eq!(PRICE_SCALE, 10i128.pow(PRICE_DIGITS));
        assert_eq!(QTY_SCALE, 10i128.pow(QTY_DIGITS));
        assert_eq!(MONEY_SCALE, 10i128.pow(MONEY_DIGITS));
    }
}
