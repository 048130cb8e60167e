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
//! nothing. Money, prices, sizes, rates and Greeks are rendered as the feed
//! routes render prices: the engine's fixed-point integer as a string of
//! digits ([`fixed`]), never a JSON number, at a fixed scale per kind
//! ([`Decimals`], served by `/v1/margin/markets`). Amounts in request bodies
//! are decimal strings in units (`"0.5"`).

use super::{ApiError, ApiState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sibyl_margin::engine::{AtRisk, GREEK_SCALE, MarketState};
use sibyl_margin::fixed::{MONEY_SCALE, VALUE_DIVISOR};
use sibyl_margin::options::OptionKind;
use sibyl_margin::{
    AccountId, Command, Engine, EngineError, Event, EventRecord, Greeks, Health, InsuranceReason,
    LiquidationKind, MarginMode, MarketKind, Side, SignedCommand, Unit,
};
use sibyl_node::margin_svc::{MarginError, MarginHandle};
use sibyl_node::store::MarginEventRow;
use std::collections::BTreeMap;

const MONEY_DIGITS: u32 = 6;
const PRICE_DIGITS: u32 = 8;
const QTY_DIGITS: u32 = 8;
const GREEK_DIGITS: u32 = sibyl_margin::engine::GREEK_DECIMALS;
/// Most rows one list route returns.
const MAX_LIMIT: usize = 1_000;

// ---------------------------------------------------------------------------
// Decimal strings
// ---------------------------------------------------------------------------

/// `v / 10^digits` as an exact decimal string, e.g. `-12.500000`: for text
/// people read (`sibyl replay`); the JSON routes use [`fixed`].
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

/// A fixed-point value as the API renders it in JSON, on every route: the
/// integer as a string of digits (`"150025000"` is 150.025 at 6 decimals),
/// so no client rounds it; the scale is stated beside it (`decimals`).
pub fn fixed(v: i128) -> String {
    v.to_string()
}

/// Money in USD ([`Decimals::money`]).
fn money(v: i128) -> String {
    fixed(v)
}

/// A price ([`Decimals::price`]).
fn price(v: i128) -> String {
    fixed(v)
}

/// A size or collateral amount ([`Decimals::size`]).
fn qty(v: i128) -> String {
    fixed(v)
}

/// A rate, ratio or fraction in parts per million ([`Decimals::rate`]).
fn rate(v: i128) -> String {
    fixed(v)
}

/// The scale (decimals) of each kind of margin value: `"1500250000"` money
/// is 1500.25 USD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Decimals {
    pub money: u32,
    pub price: u32,
    pub size: u32,
    pub rate: u32,
    pub greek: u32,
}

/// The margin routes' scales.
pub const DECIMALS: Decimals = Decimals {
    money: MONEY_DIGITS,
    price: PRICE_DIGITS,
    size: QTY_DIGITS,
    rate: MONEY_DIGITS,
    greek: GREEK_DIGITS,
};

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
        E::PriceOutsideBand { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "price_outside_band"),
        E::GuardUp { .. } => (StatusCode::CONFLICT, "guard_up"),
        E::NoPrice { .. } => (StatusCode::CONFLICT, "no_price"),
        E::Expired { .. } | E::Settled { .. } => (StatusCode::CONFLICT, "market_closed"),
        E::ExpiryInPast { .. } => (StatusCode::BAD_REQUEST, "expiry_in_past"),
        E::MarginModeConflict { .. } => (StatusCode::CONFLICT, "margin_mode_conflict"),
        E::Pricing { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "pricing_failed"),
        E::BadSignedCommand { .. } => (StatusCode::BAD_REQUEST, "bad_command"),
        E::AccountMismatch { .. } => (StatusCode::BAD_REQUEST, "account_mismatch"),
        E::InvalidOwnerKey { .. } => (StatusCode::BAD_REQUEST, "invalid_owner_key"),
        E::BadSignature { .. } => (StatusCode::UNAUTHORIZED, "bad_signature"),
        E::NotSignable { .. } => (StatusCode::FORBIDDEN, "not_signable"),
        E::NoOwner { .. } => (StatusCode::FORBIDDEN, "no_owner"),
        E::Unauthorized { .. } => (StatusCode::FORBIDDEN, "unauthorized"),
        E::StaleNonce { .. } => (StatusCode::CONFLICT, "stale_nonce"),
        E::NoCommitteeKey => (StatusCode::SERVICE_UNAVAILABLE, "no_committee_key"),
        E::OutOfOrderPrice { .. }
        | E::DuplicateFeed { .. }
        | E::SnapshotVersion { .. }
        | E::SnapshotCorrupt { .. }
        | E::InvalidCommitteeKey { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "engine_error"),
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
        e @ MarginError::NotOrdered { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "not_ordered", e.to_string())
        }
        e @ MarginError::Busy { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
        }
        e @ MarginError::CommandTooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "command_too_large",
            e.to_string(),
        ),
        e @ MarginError::BadOrderedCommand { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_command", e.to_string())
        }
        // Nothing was applied: retry once the disk has space.
        e @ MarginError::LogUnwritable { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "margin_log_unwritable",
            e.to_string(),
        ),
        // Applied in memory, written when the disk has space: not to be sent again.
        e @ MarginError::NotDurable { .. } => {
            tracing::error!(error = %e, "a margin command took effect but could not be stored yet");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not_durable",
                e.to_string(),
            )
        }
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

/// The member's SQLite readers, where the margin engine's events are stored.
fn margin_log(st: &ApiState) -> Result<&sibyl_node::store::Readers, ApiError> {
    st.store().sqlite().ok_or_else(|| {
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
// Responses
// ---------------------------------------------------------------------------
//
// Every response is a typed struct. Their fields are declared in alphabetical
// order on purpose: the routes answered with `json!` objects before, whose
// keys serde_json writes sorted, and the bytes on the wire stay the same.

/// A margin unit: `{"market": null, "mode": "cross"}` or the isolated market.
#[derive(Serialize)]
struct UnitJson {
    market: Option<String>,
    mode: &'static str,
}

impl UnitJson {
    fn of(unit: &Unit) -> Self {
        match unit {
            Unit::Cross => UnitJson {
                market: None,
                mode: "cross",
            },
            Unit::Isolated { market } => UnitJson {
                market: Some(market.clone()),
                mode: "isolated",
            },
        }
    }
}

/// Equity / maintenance ([`Decimals::rate`]), `None` without a maintenance
/// requirement.
fn margin_ratio(h: &Health) -> Option<String> {
    (h.maintenance > 0).then(|| rate(h.equity.saturating_mul(MONEY_SCALE) / h.maintenance))
}

/// A unit's health in money.
#[derive(Serialize)]
struct HealthJson {
    equity: String,
    initial: String,
    maintenance: String,
    margin_ratio: Option<String>,
    notional: String,
    portfolio_margin: bool,
    /// `healthy`, `margin_call` or `below_maintenance`.
    status: &'static str,
}

impl HealthJson {
    fn of(h: &Health) -> Self {
        let status = if h.equity < h.maintenance || h.equity < 0 {
            "below_maintenance"
        } else if h.equity < h.initial {
            "margin_call"
        } else {
            "healthy"
        };
        HealthJson {
            equity: money(h.equity),
            initial: money(h.initial),
            maintenance: money(h.maintenance),
            margin_ratio: margin_ratio(h),
            notional: money(h.notional),
            portfolio_margin: h.portfolio,
            status,
        }
    }
}

/// Greeks ([`Decimals::greek`]).
#[derive(Serialize)]
struct GreeksJson {
    delta: String,
    gamma: String,
    rho: String,
    theta: String,
    vega: String,
}

impl GreeksJson {
    fn of(g: &Greeks) -> Self {
        GreeksJson {
            delta: fixed(g.delta),
            gamma: fixed(g.gamma),
            rho: fixed(g.rho),
            theta: fixed(g.theta),
            vega: fixed(g.vega),
        }
    }

    fn by_feed(greeks: &BTreeMap<String, Greeks>) -> BTreeMap<String, GreeksJson> {
        greeks
            .iter()
            .map(|(f, g)| (f.clone(), GreeksJson::of(g)))
            .collect()
    }
}

fn add_greeks(a: &mut Greeks, b: &Greeks) {
    a.delta = a.delta.saturating_add(b.delta);
    a.gamma = a.gamma.saturating_add(b.gamma);
    a.vega = a.vega.saturating_add(b.vega);
    a.theta = a.theta.saturating_add(b.theta);
    a.rho = a.rho.saturating_add(b.rho);
}

fn scale_greeks(size: i128, g: &Greeks) -> Greeks {
    let s = |x: i128| sibyl_margin::fixed::qty_times(size, x, "greeks").unwrap_or(0);
    Greeks {
        delta: s(g.delta),
        gamma: s(g.gamma),
        vega: s(g.vega),
        theta: s(g.theta),
        rho: s(g.rho),
    }
}

/// A market's instrument: `{"type": "perpetual"}`, a future with its
/// expiry, an option with its kind, strike and expiry.
#[derive(Serialize)]
struct InstrumentJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    option: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strike: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl InstrumentJson {
    fn of(k: &MarketKind) -> Self {
        match k {
            MarketKind::Perpetual => InstrumentJson {
                expiry_ms: None,
                option: None,
                strike: None,
                kind: "perpetual",
            },
            MarketKind::Future { expiry_ms } => InstrumentJson {
                expiry_ms: Some(*expiry_ms),
                option: None,
                strike: None,
                kind: "future",
            },
            MarketKind::Option {
                kind,
                strike,
                expiry_ms,
                ..
            } => InstrumentJson {
                expiry_ms: Some(*expiry_ms),
                option: Some(match kind {
                    OptionKind::Call => "call",
                    OptionKind::Put => "put",
                }),
                strike: Some(price(*strike)),
                kind: "option",
            },
        }
    }
}

/// Variant name of a serde externally tagged enum value (`"stale"` for
/// `GuardReason::Stale { .. }`): the name its stored JSON carries.
fn variant<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Why a feed's guard is up: its kind and a sentence.
#[derive(Serialize)]
struct GuardJson {
    message: String,
    reason: String,
}

impl GuardJson {
    fn of<T: Serialize + std::fmt::Display>(reason: &T) -> Self {
        GuardJson {
            message: reason.to_string(),
            reason: variant(reason),
        }
    }
}

/// One closed slice of a liquidation.
#[derive(Serialize)]
struct ClosedJson {
    market: String,
    price: String,
    size: String,
}

/// An event with decimal strings. One struct for every kind: a field is
/// present only for the kinds that carry it (`None` is left out); kinds
/// without a dedicated shape carry only `seq`, `at_ms`, `kind` (and `round`
/// for stored ones). `Option<Option<_>>` fields are present but null for
/// some events of their kind.
#[derive(Default, Serialize)]
struct EventJson {
    /// Null for an insurance-fund movement without an account.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<Option<AccountId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<HealthJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    asset: Option<String>,
    at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<HealthJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed: Option<Vec<ClosedJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deficit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feed: Option<String>,
    /// Null for a full liquidation.
    #[serde(skip_serializing_if = "Option::is_none")]
    fraction: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_deleveraging: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_insurance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_venue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<GuardJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_after: Option<HealthJson>,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    liquidation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    market: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// An owner key (hex), on `account_created`.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    penalty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realized: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The report round of a stored event.
    #[serde(skip_serializing_if = "Option::is_none")]
    round: Option<u64>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_insurance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_liquidator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<UnitJson>,
}

impl EventJson {
    fn of(e: &EventRecord, round: Option<u64>) -> Self {
        let base = EventJson {
            at_ms: e.at_ms,
            kind: variant(&e.event),
            round,
            seq: e.seq,
            ..EventJson::default()
        };
        match &e.event {
            Event::AccountCreated { account, owner } => EventJson {
                account: Some(Some(*account)),
                owner: owner.as_ref().map(hex::encode),
                ..base
            },
            Event::Deposited {
                account,
                asset,
                amount,
            } => EventJson {
                account: Some(Some(*account)),
                amount: Some(asset_amount(asset, *amount)),
                asset: Some(asset.clone()),
                ..base
            },
            Event::Withdrawn {
                account,
                asset,
                amount,
                health_after,
            } => EventJson {
                account: Some(Some(*account)),
                amount: Some(asset_amount(asset, *amount)),
                asset: Some(asset.clone()),
                health_after: Some(HealthJson::of(health_after)),
                ..base
            },
            Event::Filled {
                account,
                market,
                size,
                price: px,
                fee,
                realized,
                reason,
            } => EventJson {
                account: Some(Some(*account)),
                fee: Some(money(*fee)),
                market: Some(market.clone()),
                price: Some(price(*px)),
                realized: Some(money(*realized)),
                reason: Some(variant(reason)),
                size: Some(qty(*size)),
                ..base
            },
            Event::MarginCall {
                account,
                unit,
                health,
            }
            | Event::MarginCallCleared {
                account,
                unit,
                health,
            } => EventJson {
                account: Some(Some(*account)),
                health: Some(HealthJson::of(health)),
                unit: Some(UnitJson::of(unit)),
                ..base
            },
            Event::LiquidationDeferred {
                account,
                unit,
                feed,
                reason,
                health,
            } => EventJson {
                account: Some(Some(*account)),
                feed: Some(feed.clone()),
                guard: Some(GuardJson::of(reason)),
                health: Some(HealthJson::of(health)),
                unit: Some(UnitJson::of(unit)),
                ..base
            },
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
                let (liquidation, fraction) = match kind {
                    LiquidationKind::Partial { fraction_ppm } => {
                        ("partial", Some(rate(i128::from(*fraction_ppm))))
                    }
                    LiquidationKind::Full => ("full", None),
                };
                EventJson {
                    account: Some(Some(*account)),
                    after: Some(HealthJson::of(after)),
                    before: Some(HealthJson::of(before)),
                    closed: Some(
                        closed
                            .iter()
                            .map(|c| ClosedJson {
                                market: c.market.clone(),
                                price: price(c.price),
                                size: qty(c.size),
                            })
                            .collect(),
                    ),
                    fraction: Some(fraction),
                    liquidation: Some(liquidation),
                    note: Some(note.clone()),
                    penalty: Some(money(*penalty)),
                    to_insurance: Some(money(*to_insurance)),
                    to_liquidator: Some(money(*to_liquidator)),
                    unit: Some(UnitJson::of(unit)),
                    ..base
                }
            }
            Event::InsuranceFund {
                delta,
                balance,
                reason,
            } => EventJson {
                account: Some(match reason {
                    InsuranceReason::Funded => None,
                    InsuranceReason::Penalty { account } | InsuranceReason::BadDebt { account } => {
                        Some(*account)
                    }
                }),
                balance: Some(money(*balance)),
                delta: Some(money(*delta)),
                reason: Some(variant(reason)),
                ..base
            },
            Event::BadDebt {
                account,
                unit,
                deficit,
                from_insurance,
                from_deleveraging,
                from_venue,
            } => EventJson {
                account: Some(Some(*account)),
                deficit: Some(money(*deficit)),
                from_deleveraging: Some(money(*from_deleveraging)),
                from_insurance: Some(money(*from_insurance)),
                from_venue: Some(money(*from_venue)),
                unit: Some(UnitJson::of(unit)),
                ..base
            },
            Event::GuardRaised { feed, reason } => EventJson {
                feed: Some(feed.clone()),
                guard: Some(GuardJson::of(reason)),
                ..base
            },
            Event::GuardCleared { feed } => EventJson {
                feed: Some(feed.clone()),
                ..base
            },
            _ => base,
        }
    }
}

fn asset_amount(asset: &str, amount: i128) -> String {
    if asset == sibyl_margin::fixed::QUOTE_ASSET {
        money(amount)
    } else {
        qty(amount)
    }
}

fn stored_events(rows: Vec<MarginEventRow>) -> Vec<EventJson> {
    rows.iter()
        .filter_map(|r| match serde_json::from_str::<EventRecord>(&r.body) {
            Ok(e) => Some(EventJson::of(&e, r.round)),
            Err(err) => {
                tracing::warn!(seq = r.seq, error = %err, "stored margin event does not parse");
                None
            }
        })
        .collect()
}

/// `GET /v1/margin/accounts/{account}`.
#[derive(Serialize)]
pub(super) struct AccountResponse {
    account: AccountId,
    cash: String,
    collateral: Vec<CollateralJson>,
    engine_time_ms: u64,
    /// The cross unit's health.
    health: Option<HealthJson>,
    /// The last signed-command nonce taken (0 without an owner).
    nonce: u64,
    /// The owner's Ed25519 public key (hex); null: operator-managed.
    owner: Option<String>,
    units: Vec<AccountUnitJson>,
}

#[derive(Serialize)]
struct CollateralJson {
    amount: String,
    asset: String,
}

#[derive(Serialize)]
struct AccountUnitJson {
    health: HealthJson,
    in_margin_call: bool,
    liquidation_deferred: bool,
    #[serde(flatten)]
    unit: UnitJson,
    /// Number of positions in the unit.
    positions: usize,
}

/// `GET /v1/margin/accounts/{account}/positions`.
#[derive(Serialize)]
pub(super) struct PositionsResponse {
    account: AccountId,
    positions: Vec<PositionJson>,
}

#[derive(Serialize)]
struct PositionJson {
    entry_price: Option<String>,
    feed: Option<String>,
    greeks: Option<GreeksJson>,
    instrument: Option<InstrumentJson>,
    isolated_margin: Option<String>,
    mark_price: Option<String>,
    market: String,
    mode: &'static str,
    side: &'static str,
    size: String,
    underlying_price: Option<String>,
    unrealized_pnl: Option<String>,
    value: Option<String>,
}

/// `GET /v1/margin/accounts/{account}/greeks`.
#[derive(Serialize)]
pub(super) struct GreeksResponse {
    account: AccountId,
    /// Per underlying feed, summed over the account.
    greeks: BTreeMap<String, GreeksJson>,
    scale_note: String,
    units: Vec<GreeksUnitJson>,
}

#[derive(Serialize)]
struct GreeksUnitJson {
    greeks: BTreeMap<String, GreeksJson>,
    #[serde(flatten)]
    unit: UnitJson,
}

/// `GET /v1/margin/at-risk`.
#[derive(Serialize)]
pub(super) struct AtRiskResponse {
    accounts_total: usize,
    engine_time_ms: u64,
    units: Vec<AtRiskUnitJson>,
}

#[derive(Serialize)]
struct AtRiskUnitJson {
    account: AccountId,
    health: HealthJson,
    in_margin_call: bool,
    liquidation_deferred: bool,
    #[serde(flatten)]
    unit: UnitJson,
    /// 1 = closest to liquidation.
    rank: usize,
}

/// `GET /v1/margin/liquidations`.
#[derive(Serialize)]
pub(super) struct LiquidationsResponse {
    liquidations: Vec<EventJson>,
    next_before: Option<u64>,
}

/// `GET /v1/margin/insurance`.
#[derive(Serialize)]
pub(super) struct InsuranceResponse {
    accounts: usize,
    balance: String,
    engine_time_ms: u64,
    fees: String,
    recent: Vec<EventJson>,
}

/// `GET /v1/margin/markets`.
#[derive(Serialize)]
pub(super) struct MarketsResponse {
    /// The scale of every kind of value on the margin routes.
    decimals: Decimals,
    engine_time_ms: u64,
    feeds: Vec<FeedJson>,
    markets: Vec<MarketJson>,
}

#[derive(Serialize)]
struct MarketJson {
    feed: String,
    greeks: Option<GreeksJson>,
    guard: Option<GuardJson>,
    guarded: bool,
    initial_rate: String,
    instrument: InstrumentJson,
    maintenance_rate: String,
    mark_price: Option<String>,
    market: String,
    settled_price: Option<String>,
    underlying_price: Option<String>,
}

#[derive(Serialize)]
struct FeedJson {
    confidence: Option<String>,
    /// Of `price` and `confidence`, as on the feed routes.
    decimals: u32,
    feed: String,
    guard: Option<GuardJson>,
    max_staleness_ms: u64,
    price: Option<String>,
    round: Option<u64>,
    timestamp_ms: Option<u64>,
}

/// The answer to an admin command: its events and the account's cross
/// health after it.
#[derive(Serialize)]
struct CommandResponse {
    account: Option<AccountId>,
    events: Vec<EventJson>,
    health: Option<HealthJson>,
}

fn account_response(engine: &Engine, id: AccountId) -> Result<AccountResponse, ApiError> {
    let views = engine.account_view(id).map_err(|e| engine_error(&e))?;
    let s = engine.state();
    let acct = s
        .accounts
        .get(&id)
        .ok_or_else(|| engine_error(&EngineError::UnknownAccount { account: id }))?;
    let units = views
        .iter()
        .map(|v| AccountUnitJson {
            health: HealthJson::of(&v.health),
            in_margin_call: s.margin_calls.contains(&(id, v.unit.clone())),
            liquidation_deferred: s.deferred.contains(&(id, v.unit.clone())),
            unit: UnitJson::of(&v.unit),
            positions: acct
                .positions
                .iter()
                .filter(|(m, p)| match &v.unit {
                    Unit::Cross => p.isolated.is_none(),
                    Unit::Isolated { market } => *m == market,
                })
                .count(),
        })
        .collect();
    let cross = views
        .iter()
        .find(|v| v.unit == Unit::Cross)
        .map(|v| HealthJson::of(&v.health));
    Ok(AccountResponse {
        account: id,
        cash: money(acct.cash),
        collateral: acct
            .collateral
            .iter()
            .map(|(a, q)| CollateralJson {
                amount: qty(*q),
                asset: a.clone(),
            })
            .collect(),
        engine_time_ms: engine.now_ms(),
        health: cross,
        nonce: acct.nonce,
        owner: acct.owner.as_ref().map(hex::encode),
        units,
    })
}

fn positions_response(engine: &Engine, id: AccountId) -> Result<PositionsResponse, ApiError> {
    let s = engine.state();
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
        out.push(PositionJson {
            entry_price: entry.map(price),
            feed: ms.map(|m| m.config.feed.clone()),
            greeks: mark.map(|m| GreeksJson::of(&scale_greeks(p.size, &m.greeks))),
            instrument: ms.map(|m| InstrumentJson::of(&m.config.kind)),
            isolated_margin: p.isolated.map(money),
            mark_price: mark.map(|m| price(m.price)),
            market: market.clone(),
            mode: if p.isolated.is_some() {
                "isolated"
            } else {
                "cross"
            },
            side: if p.size >= 0 { "long" } else { "short" },
            size: qty(p.size),
            underlying_price: mark.map(|m| price(m.underlying)),
            unrealized_pnl: pnl.map(money),
            value: value.map(money),
        });
    }
    Ok(PositionsResponse {
        account: id,
        positions: out,
    })
}

fn greeks_response(engine: &Engine, id: AccountId) -> Result<GreeksResponse, ApiError> {
    let views = engine.account_view(id).map_err(|e| engine_error(&e))?;
    let mut total: BTreeMap<String, Greeks> = BTreeMap::new();
    let mut units = Vec::new();
    for v in &views {
        for (feed, g) in &v.greeks {
            add_greeks(total.entry(feed.clone()).or_default(), g);
        }
        units.push(GreeksUnitJson {
            greeks: GreeksJson::by_feed(&v.greeks),
            unit: UnitJson::of(&v.unit),
        });
    }
    Ok(GreeksResponse {
        account: id,
        greeks: GreeksJson::by_feed(&total),
        scale_note: format!(
            "{GREEK_DIGITS} decimals (GREEK_SCALE = {GREEK_SCALE}); delta in underlying units, vega per 1.00 vol, theta per year, rho per 1.00 rate"
        ),
        units,
    })
}

fn at_risk_response(engine: &Engine, ranked: &[AtRisk]) -> AtRiskResponse {
    let s = engine.state();
    AtRiskResponse {
        accounts_total: s.accounts.len(),
        engine_time_ms: engine.now_ms(),
        units: ranked
            .iter()
            .enumerate()
            .map(|(i, r)| AtRiskUnitJson {
                account: r.account,
                health: HealthJson::of(&r.health),
                in_margin_call: s.margin_calls.contains(&(r.account, r.unit.clone())),
                liquidation_deferred: s.deferred.contains(&(r.account, r.unit.clone())),
                unit: UnitJson::of(&r.unit),
                rank: i + 1,
            })
            .collect(),
    }
}

fn markets_response(engine: &Engine) -> MarketsResponse {
    let s = engine.state();
    let markets = s
        .markets
        .iter()
        .map(|(name, m)| {
            let feed = s.feeds.get(&m.config.feed);
            MarketJson {
                feed: m.config.feed.clone(),
                greeks: m.mark.as_ref().map(|k| GreeksJson::of(&k.greeks)),
                guard: feed.and_then(|f| f.guard.as_ref()).map(GuardJson::of),
                guarded: feed.is_none_or(|f| f.guard.is_some()),
                initial_rate: rate(i128::from(m.config.initial_ppm)),
                instrument: InstrumentJson::of(&m.config.kind),
                maintenance_rate: rate(i128::from(m.config.maintenance_ppm)),
                mark_price: m.mark.as_ref().map(|k| price(k.price)),
                market: name.clone(),
                settled_price: m.settled.map(price),
                underlying_price: m.mark.as_ref().map(|k| price(k.underlying)),
            }
        })
        .collect();
    let feeds = s
        .feeds
        .iter()
        .map(|(name, f)| FeedJson {
            confidence: f.last.as_ref().map(|l| price(l.confidence)),
            decimals: DECIMALS.price,
            feed: name.clone(),
            guard: f.guard.as_ref().map(GuardJson::of),
            max_staleness_ms: f.config.max_staleness_ms,
            price: f.last.as_ref().map(|l| price(l.price)),
            round: f.last.as_ref().map(|l| l.round),
            timestamp_ms: f.last.as_ref().map(|l| l.timestamp_ms),
        })
        .collect();
    MarketsResponse {
        decimals: DECIMALS,
        engine_time_ms: engine.now_ms(),
        feeds,
        markets,
    }
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/// One account's view, rendered from the engine under its read lock.
fn account_view<T>(
    st: &ApiState,
    id: &str,
    view: impl FnOnce(&Engine, AccountId) -> Result<T, ApiError>,
) -> Result<Json<T>, ApiError> {
    let id = account_param(id)?;
    let h = handle(st)?;
    let guard = h.read();
    view(&guard.engine, id).map(Json)
}

/// `GET /v1/margin/accounts/{account}`: cash, collateral and every margin
/// unit's health with its mode.
pub(super) async fn account(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AccountResponse>, ApiError> {
    account_view(&st, &id, account_response)
}

/// How long the proof route waits, by default, for a signed report to carry
/// the state it proves (about one round when the committee keeps up).
pub const PROOF_WAIT_MS: u64 = 5_000;
/// Most the proof route waits (`?wait_ms=`).
pub const PROOF_WAIT_MAX_MS: u64 = 30_000;

/// `GET /v1/margin/accounts/{account}/proof?wait_ms=N`: the account's state
/// after the last report this member's engine took, its Merkle proof, the
/// state root, and the signed report that carries that root (the
/// committee's threshold signature over it: `signed: true`). A state is
/// carried by a later report (about one round later), so the route waits up
/// to `wait_ms` (default 5 s) for it, taking a fresh proof when the engine
/// moved past a state no report carried; after that it answers with
/// `signed: false` and no report. `sibyl verify` checks the answer.
pub(super) async fn proof(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let p = params(q, &["wait_ms"])?;
    let wait_ms = match p.get("wait_ms") {
        None => PROOF_WAIT_MS,
        Some(s) => super::handlers::int_param("wait_ms", s, "milliseconds, at most 30000")?,
    };
    if wait_ms > PROOF_WAIT_MAX_MS {
        return Err(ApiError::bad_parameter(format!(
            "`wait_ms` = {wait_ms} is more than {PROOF_WAIT_MAX_MS} (30 s)"
        )));
    }
    let id = account_param(&id)?;
    let h = handle(&st)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let (mut taken, mut signed) = (take_proof(h, id)?, None);
    while tokio::time::Instant::now() < deadline {
        let Some(at) = taken.3 else { break };
        let carried = {
            let g = h.read();
            match g.signed_states.get(&at.round) {
                Some((root, report_round)) if *root == at.root => Some(Ok(*report_round)),
                // A later state is carried, or a report carried another
                // root for this round (this engine differs: never signed).
                Some(_) => Some(Err(true)),
                None if g
                    .signed_states
                    .last_key_value()
                    .is_some_and(|(r, _)| *r > at.round) =>
                {
                    Some(Err(false))
                }
                None => None,
            }
        };
        match carried {
            Some(Ok(report_round)) => {
                signed = Some(report_round);
                break;
            }
            Some(Err(true)) => break,
            // Skipped: prove the current state instead.
            Some(Err(false)) => taken = take_proof(h, id)?,
            None => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
    let report = match signed {
        Some(round) => margin_log(&st)?.read(move |db| db.report(round)).await?,
        None => None,
    };
    let (state, proof, root, at, engine_time_ms) = taken;
    let hex32 = |h: &[u8; 32]| format!("0x{}", hex::encode(h));
    let unit_name = |u: &Unit| match u {
        Unit::Cross => "cross".to_string(),
        Unit::Isolated { market } => format!("isolated:{market}"),
    };
    Ok(Json(ProofResponse {
        account: id,
        engine_time_ms,
        state_round: at.map(|c| c.round),
        state: ProofStateJson {
            cash: money(state.state.cash),
            collateral: state
                .state
                .collateral
                .iter()
                .map(|(a, q)| (a.clone(), qty(*q)))
                .collect(),
            positions: state
                .state
                .positions
                .iter()
                .map(|(m, p)| {
                    (
                        m.clone(),
                        ProofPositionJson {
                            size: qty(p.size),
                            quote: money(p.quote),
                            isolated_margin: p.isolated.map(money),
                        },
                    )
                })
                .collect(),
            margin_calls: state.margin_calls.iter().map(unit_name).collect(),
            liquidation_deferred: state.deferred.iter().map(unit_name).collect(),
            owner: state.state.owner.as_ref().map(hex::encode),
            nonce: state.state.owner.map(|_| state.state.nonce),
        },
        leaf_preimage: format!("0x{}", hex::encode(state.encode())),
        proof: ProofJson {
            slot: proof.slot,
            count: proof.count,
            siblings: proof.siblings.iter().map(hex32).collect(),
            globals_hash: hex32(&proof.globals_hash),
            size_bytes: proof.size_bytes(),
        },
        state_root: hex32(&root),
        signed: report.is_some(),
        report,
    }))
}

/// An account's state, proof and root, with the state's round (`None`
/// before the engine took a report) and the engine clock, taken under one
/// lock.
type TakenProof = (
    sibyl_margin::state_root::AccountState,
    sibyl_margin::state_root::AccountProof,
    [u8; 32],
    Option<sibyl_aggregator::MarginCheckpoint>,
    u64,
);

fn take_proof(h: &MarginHandle, id: AccountId) -> Result<TakenProof, ApiError> {
    let mut guard = h.read();
    let (state, proof, root) = guard
        .engine
        .account_proof(id)
        .map_err(|e| engine_error(&e))?;
    // The last state the service noted is this one unless a command was
    // applied outside a report since (a lone engine): then no report can
    // carry it.
    let at = guard.last_state.filter(|c| c.root == root);
    Ok((state, proof, root, at, guard.engine.state().now_ms))
}

/// The proof route's body.
#[derive(Debug, Serialize)]
pub struct ProofResponse {
    account: AccountId,
    engine_time_ms: u64,
    state: ProofStateJson,
    /// `AccountState::encode()`: the leaf is keccak(0x00 ‖ these bytes).
    leaf_preimage: String,
    proof: ProofJson,
    state_root: String,
    /// The round whose report (and every one before it) the state follows.
    state_round: Option<sibyl_aggregator::Round>,
    /// Whether `report` carries `state_root` under the committee's signature.
    signed: bool,
    /// The signed report whose margin state is (`state_round`, `state_root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<sibyl_aggregator::SignedReport>,
}

#[derive(Debug, Serialize)]
struct ProofStateJson {
    cash: String,
    collateral: BTreeMap<String, String>,
    positions: BTreeMap<String, ProofPositionJson>,
    margin_calls: Vec<String>,
    liquidation_deferred: Vec<String>,
    /// The owner's public key (hex), absent for an operator-managed account.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// The last signed-command nonce, absent without an owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ProofPositionJson {
    size: String,
    quote: String,
    isolated_margin: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProofJson {
    slot: u64,
    count: u64,
    siblings: Vec<String>,
    globals_hash: String,
    size_bytes: usize,
}

/// `GET /v1/margin/accounts/{account}/positions`: every position with its
/// mark, entry price, PnL and Greeks.
pub(super) async fn positions(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<PositionsResponse>, ApiError> {
    account_view(&st, &id, positions_response)
}

/// `GET /v1/margin/accounts/{account}/greeks`: Greeks per underlying feed,
/// summed over the account and per margin unit.
pub(super) async fn greeks(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<GreeksResponse>, ApiError> {
    account_view(&st, &id, greeks_response)
}

/// `GET /v1/margin/at-risk?limit=N`: margin units closest to liquidation
/// (lowest equity / maintenance first).
pub(super) async fn at_risk(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<AtRiskResponse>, ApiError> {
    let p = params(q, &["limit"])?;
    let limit = limit_param(&p, 20)?;
    let h = handle(&st)?;
    let ranked = h.closest_to_liquidation(limit);
    let guard = h.read();
    Ok(Json(at_risk_response(&guard.engine, &ranked)))
}

/// `GET /v1/margin/liquidations?limit=N&before=SEQ`: stored liquidations,
/// newest first; `next_before` pages further back.
pub(super) async fn liquidations(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<LiquidationsResponse>, ApiError> {
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
    let rows = margin_log(&st)?
        .read(move |db| db.margin_events_of_kind_before("liquidated", before, limit + 1))
        .await?;
    let more = rows.len() > limit;
    let rows: Vec<MarginEventRow> = rows.into_iter().take(limit).collect();
    let next_before = if more {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(LiquidationsResponse {
        liquidations: stored_events(rows),
        next_before,
    }))
}

/// `GET /v1/margin/insurance`: the insurance fund, fees and the fund's
/// recent movements.
pub(super) async fn insurance(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<InsuranceResponse>, ApiError> {
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
    let rows = margin_log(&st)?
        .read(move |db| db.margin_events_of_kind_before("insurance_fund", None, limit))
        .await?;
    Ok(Json(InsuranceResponse {
        accounts,
        balance: money(balance),
        engine_time_ms: now,
        fees: money(fees),
        recent: stored_events(rows),
    }))
}

/// `GET /v1/margin/markets`: every market with its mark and requirements,
/// and every feed with its last price and guard (why new risk is refused
/// and liquidations wait).
pub(super) async fn markets(State(st): State<ApiState>) -> Result<Json<MarketsResponse>, ApiError> {
    let h = handle(&st)?;
    let g = h.read();
    Ok(Json(markets_response(&g.engine)))
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
    answer(h, account, &events, status)
}

/// A command's answer: its events and the account's cross health now.
fn answer(
    h: &MarginHandle,
    account: Option<AccountId>,
    events: &[EventRecord],
    status: StatusCode,
) -> Result<Response, ApiError> {
    let health = account.and_then(|id| {
        let g = h.read();
        let views = g.engine.account_view(id).ok()?;
        views
            .iter()
            .find(|v| v.unit == Unit::Cross)
            .map(|v| HealthJson::of(&v.health))
    });
    let events = events.iter().map(|e| EventJson::of(e, None)).collect();
    Ok((
        status,
        Json(CommandResponse {
            account,
            events,
            health,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// Optional id; default: one more than the highest id in use.
    account: Option<AccountId>,
    /// Optional owner: an Ed25519 public key, 32 bytes as hex. The
    /// account's withdrawals and trades must then be signed by it.
    owner: Option<String>,
}

/// `POST /v1/margin/accounts` `{"account": 42}` (id optional).
pub(super) async fn create_account(
    State(st): State<ApiState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b: CreateBody = body(b)?;
    let owner = b
        .owner
        .as_deref()
        .map(|k| {
            sibyl_margin::signed::hex_bytes::decode::<32>(k).map_err(|e| {
                ApiError::bad_parameter(format!("`owner` is not an Ed25519 public key: {e}"))
            })
        })
        .transpose()?;
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
        Command::CreateAccount { account: id, owner },
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
            price: None,
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
            price: None,
        },
        StatusCode::OK,
    )
    .await
}

// ---------------------------------------------------------------------------
// Commands signed by an account's owner (no admin token: the signature is
// the authorization)
// ---------------------------------------------------------------------------

/// Reads a signed-command envelope field by field, so a malformed one is a
/// 400 that names the field.
fn envelope(b: Result<Bytes, BytesRejection>) -> Result<SignedCommand, ApiError> {
    let v: Value = body(b)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_envelope", m);
    let Value::Object(mut o) = v else {
        return Err(bad(
            "the body must be a JSON object {account, nonce, command, signature}".into(),
        ));
    };
    let mut take = |field: &str| {
        o.remove(field)
            .ok_or_else(|| bad(format!("`{field}` is missing")))
    };
    let uint = |field: &str, v: Value| {
        v.as_u64().ok_or_else(|| {
            bad(format!(
                "`{field}` must be a whole JSON number in 0..={}",
                u64::MAX
            ))
        })
    };
    let account = uint("account", take("account")?)?;
    let nonce = uint("nonce", take("nonce")?)?;
    let Value::String(command) = take("command")? else {
        return Err(bad(
            "`command` must be a string: the command's JSON text exactly as signed".into(),
        ));
    };
    let Value::String(signature) = take("signature")? else {
        return Err(bad("`signature` must be a hex string".into()));
    };
    let signature = sibyl_margin::signed::hex_bytes::decode::<64>(&signature)
        .map_err(|e| bad(format!("`signature` is not an Ed25519 signature: {e}")))?;
    if let Some(extra) = o.keys().next() {
        return Err(bad(format!(
            "unknown field `{extra}`; an envelope has account, nonce, command and signature"
        )));
    }
    Ok(SignedCommand {
        account,
        nonce,
        command,
        signature,
    })
}

/// `GET /v1/margin/signing`: what an owner signs besides its command.
#[derive(Serialize)]
pub(super) struct SigningResponse {
    /// The signed bytes' first bytes, as text.
    domain: &'static str,
    /// The committee's group public key (hex) that the signed bytes name.
    committee_key: String,
    /// The whole layout, for a client building the bytes itself.
    signed_bytes: &'static str,
}

/// `GET /v1/margin/signing`: the domain and committee key of the bytes an
/// account owner signs (docs/MARGIN.md, "Account keys"); 503
/// `no_committee_key` if this engine has none (it then takes no signed
/// command).
pub(super) async fn signing(State(st): State<ApiState>) -> Result<Json<SigningResponse>, ApiError> {
    let h = handle(&st)?;
    let key = h
        .committee()
        .ok_or_else(|| engine_error(&EngineError::NoCommitteeKey))?;
    let domain = std::str::from_utf8(sibyl_margin::signed::SIGNED_COMMAND_DOMAIN)
        .unwrap_or("Sibyl margin command v2");
    Ok(Json(SigningResponse {
        domain,
        committee_key: key.to_hex(),
        signed_bytes: SIGNED_BYTES_LAYOUT,
    }))
}

/// The signed bytes' layout in words (docs/MARGIN.md, "Account keys").
pub(super) const SIGNED_BYTES_LAYOUT: &str = "domain (UTF-8) ‖ committee key length (1 byte) ‖ committee key ‖ account (u64 big-endian) ‖ nonce (u64 big-endian) ‖ command (the JSON text as sent)";

/// `POST /v1/margin/signed`: a command signed by its account's owner
/// (docs/MARGIN.md, "Account keys"). Needs no admin token.
pub(super) async fn signed(
    State(st): State<ApiState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let env = envelope(b)?;
    let h = handle(&st)?;
    let account = env.account;
    let status = match env.parse() {
        Ok(Command::CreateAccount { .. }) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let events = h.signed(env).await.map_err(margin_error)?;
    answer(h, Some(account), &events, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_margin::fixed::{PRICE_SCALE, QTY_SCALE};

    #[test]
    fn a_margin_log_that_cannot_be_written_maps_to_clear_errors() {
        let e = margin_error(MarginError::LogUnwritable {
            path: "/data/sibyl.db".into(),
            inputs: 3,
            error: "the disk holding the database is full".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "margin_log_unwritable")
        );
        assert!(e.message.contains("/data/sibyl.db"), "{}", e.message);
        assert!(e.message.contains("full"), "{}", e.message);
        let e = margin_error(MarginError::NotDurable {
            seq: 9,
            path: "/data/sibyl.db".into(),
            error: "the disk holding the database is full".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "not_durable")
        );
        assert!(e.message.contains("do not send it again"), "{}", e.message);
    }

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

    /// One event of every shape the API renders, as the engine stores it.
    fn sample_events() -> Vec<(EventRecord, Option<u64>)> {
        use sibyl_margin::{ClosedSlice, FillReason, GuardReason};
        let h = |equity: i128, initial: i128, maintenance: i128, portfolio: bool| Health {
            equity,
            initial,
            maintenance,
            notional: 10 * equity,
            portfolio,
        };
        let iso = Unit::Isolated {
            market: "ETH-PERP".into(),
        };
        let events = vec![
            Event::AccountCreated {
                account: 7,
                owner: None,
            },
            Event::Deposited {
                account: 7,
                asset: "USD".into(),
                amount: 1_500_250_000,
            },
            Event::Deposited {
                account: 7,
                asset: "BTC".into(),
                amount: 12_345_678,
            },
            Event::Withdrawn {
                account: 7,
                asset: "USD".into(),
                amount: 1,
                health_after: h(900_000_000, 500_000_000, 0, false),
            },
            Event::Filled {
                account: 7,
                market: "BTC-PERP".into(),
                size: -25_000_000,
                price: 6_000_012_345_678,
                fee: 1_234,
                realized: -56_789,
                reason: FillReason::AutoDeleverage,
            },
            Event::MarginCall {
                account: 7,
                unit: Unit::Cross,
                health: h(400_000_000, 500_000_000, 250_000_000, true),
            },
            Event::MarginCallCleared {
                account: 7,
                unit: iso.clone(),
                health: h(600_000_000, 500_000_000, 250_000_000, false),
            },
            Event::LiquidationDeferred {
                account: 7,
                unit: Unit::Cross,
                feed: "BTC-USD".into(),
                reason: GuardReason::Stale {
                    last_ms: 1,
                    now_ms: 2,
                    max_ms: 3,
                },
                health: h(-5, 500_000_000, 250_000_000, false),
            },
            Event::Liquidated {
                account: 7,
                unit: iso,
                kind: LiquidationKind::Partial {
                    fraction_ppm: 250_000,
                },
                before: h(200_000_000, 500_000_000, 250_000_000, false),
                after: h(190_000_000, 300_000_000, 150_000_000, false),
                closed: vec![ClosedSlice {
                    market: "ETH-PERP".into(),
                    size: 50_000_000,
                    price: 300_000_000_000,
                }],
                penalty: 10_000_000,
                to_liquidator: 5_000_000,
                to_insurance: 5_000_000,
                note: "closing 250000 ppm restores".into(),
            },
            Event::Liquidated {
                account: 8,
                unit: Unit::Cross,
                kind: LiquidationKind::Full,
                before: h(-1, 5, 2, true),
                after: h(0, 0, 0, false),
                closed: vec![],
                penalty: 0,
                to_liquidator: 0,
                to_insurance: 0,
                note: "closed in full".into(),
            },
            Event::InsuranceFund {
                delta: 5_000_000,
                balance: 1_005_000_000,
                reason: InsuranceReason::Funded,
            },
            Event::InsuranceFund {
                delta: -3,
                balance: 7,
                reason: InsuranceReason::BadDebt { account: 8 },
            },
            Event::BadDebt {
                account: 8,
                unit: Unit::Cross,
                deficit: 10,
                from_insurance: 7,
                from_deleveraging: 2,
                from_venue: 1,
            },
            Event::GuardRaised {
                feed: "SOL-USD".into(),
                reason: GuardReason::NoPrice,
            },
            Event::GuardCleared {
                feed: "SOL-USD".into(),
            },
            Event::Settled {
                market: "BTC-FUT".into(),
                underlying_price: 1,
                price: 1,
                positions: 0,
            },
        ];
        (100u64..)
            .zip(events)
            .map(|(seq, event)| {
                let at_ms = 1_700_000_000_000 - 100 + seq;
                // Stored events carry their report round; live ones do not.
                let round = (seq % 2 == 1).then_some(seq - 60);
                (EventRecord { seq, at_ms, event }, round)
            })
            .collect()
    }

    /// `serialized` is exactly `expected`, and field for field too (so a
    /// failure names the field that moved).
    fn same_json<T: Serialize>(what: &str, value: &T, expected: &str) {
        let got = serde_json::to_string(value).expect("serializes");
        let (g, e): (Value, Value) = (
            serde_json::from_str(&got).expect("json"),
            serde_json::from_str(expected).expect("golden json"),
        );
        if let (Value::Object(g), Value::Object(e)) = (&g, &e) {
            for (k, v) in e {
                assert_eq!(g.get(k), Some(v), "{what}: field `{k}`");
            }
            assert_eq!(g.len(), e.len(), "{what}: extra fields in {got}");
        }
        assert_eq!(got, expected, "{what}: bytes");
    }

    /// The typed responses answer with these bytes (sorted keys, nulls
    /// where a value is missing, `round` only on stored events, fixed-point
    /// values as integer strings). The account figures come from the demo book of seed 11: a
    /// change to the demo generator changes them.
    #[test]
    fn responses_keep_their_json_bytes() {
        let golden = [
            r#"{"account":7,"at_ms":1700000000000,"kind":"account_created","seq":100}"#,
            r#"{"account":7,"amount":"1500250000","asset":"USD","at_ms":1700000000001,"kind":"deposited","round":41,"seq":101}"#,
            r#"{"account":7,"amount":"12345678","asset":"BTC","at_ms":1700000000002,"kind":"deposited","seq":102}"#,
            r#"{"account":7,"amount":"1","asset":"USD","at_ms":1700000000003,"health_after":{"equity":"900000000","initial":"500000000","maintenance":"0","margin_ratio":null,"notional":"9000000000","portfolio_margin":false,"status":"healthy"},"kind":"withdrawn","round":43,"seq":103}"#,
            r#"{"account":7,"at_ms":1700000000004,"fee":"1234","kind":"filled","market":"BTC-PERP","price":"6000012345678","realized":"-56789","reason":"auto_deleverage","seq":104,"size":"-25000000"}"#,
            r#"{"account":7,"at_ms":1700000000005,"health":{"equity":"400000000","initial":"500000000","maintenance":"250000000","margin_ratio":"1600000","notional":"4000000000","portfolio_margin":true,"status":"margin_call"},"kind":"margin_call","round":45,"seq":105,"unit":{"market":null,"mode":"cross"}}"#,
            r#"{"account":7,"at_ms":1700000000006,"health":{"equity":"600000000","initial":"500000000","maintenance":"250000000","margin_ratio":"2400000","notional":"6000000000","portfolio_margin":false,"status":"healthy"},"kind":"margin_call_cleared","seq":106,"unit":{"market":"ETH-PERP","mode":"isolated"}}"#,
            r#"{"account":7,"at_ms":1700000000007,"feed":"BTC-USD","guard":{"message":"stale: last price at 1, now 2, max age 3 ms","reason":"stale"},"health":{"equity":"-5","initial":"500000000","maintenance":"250000000","margin_ratio":"0","notional":"-50","portfolio_margin":false,"status":"below_maintenance"},"kind":"liquidation_deferred","round":47,"seq":107,"unit":{"market":null,"mode":"cross"}}"#,
            r#"{"account":7,"after":{"equity":"190000000","initial":"300000000","maintenance":"150000000","margin_ratio":"1266666","notional":"1900000000","portfolio_margin":false,"status":"margin_call"},"at_ms":1700000000008,"before":{"equity":"200000000","initial":"500000000","maintenance":"250000000","margin_ratio":"800000","notional":"2000000000","portfolio_margin":false,"status":"below_maintenance"},"closed":[{"market":"ETH-PERP","price":"300000000000","size":"50000000"}],"fraction":"250000","kind":"liquidated","liquidation":"partial","note":"closing 250000 ppm restores","penalty":"10000000","seq":108,"to_insurance":"5000000","to_liquidator":"5000000","unit":{"market":"ETH-PERP","mode":"isolated"}}"#,
            r#"{"account":8,"after":{"equity":"0","initial":"0","maintenance":"0","margin_ratio":null,"notional":"0","portfolio_margin":false,"status":"healthy"},"at_ms":1700000000009,"before":{"equity":"-1","initial":"5","maintenance":"2","margin_ratio":"-500000","notional":"-10","portfolio_margin":true,"status":"below_maintenance"},"closed":[],"fraction":null,"kind":"liquidated","liquidation":"full","note":"closed in full","penalty":"0","round":49,"seq":109,"to_insurance":"0","to_liquidator":"0","unit":{"market":null,"mode":"cross"}}"#,
            r#"{"account":null,"at_ms":1700000000010,"balance":"1005000000","delta":"5000000","kind":"insurance_fund","reason":"funded","seq":110}"#,
            r#"{"account":8,"at_ms":1700000000011,"balance":"7","delta":"-3","kind":"insurance_fund","reason":"bad_debt","round":51,"seq":111}"#,
            r#"{"account":8,"at_ms":1700000000012,"deficit":"10","from_deleveraging":"2","from_insurance":"7","from_venue":"1","kind":"bad_debt","seq":112,"unit":{"market":null,"mode":"cross"}}"#,
            r#"{"at_ms":1700000000013,"feed":"SOL-USD","guard":{"message":"no price yet","reason":"no_price"},"kind":"guard_raised","round":53,"seq":113}"#,
            r#"{"at_ms":1700000000014,"feed":"SOL-USD","kind":"guard_cleared","seq":114}"#,
            r#"{"at_ms":1700000000015,"kind":"settled","round":55,"seq":115}"#,
        ];
        let events = sample_events();
        assert_eq!(events.len(), golden.len());
        for ((e, round), expected) in events.iter().zip(golden) {
            same_json(
                &format!("event {}", e.seq),
                &EventJson::of(e, *round),
                expected,
            );
        }
        let book = sibyl_margin::demo_book(11, 3);
        let e = &book.engine;
        same_json(
            "account 2",
            &account_response(e, 2).expect("account"),
            r#"{"account":2,"cash":"29629000000","collateral":[],"engine_time_ms":1767225600000,"health":{"equity":"29629000000","initial":"0","maintenance":"0","margin_ratio":null,"notional":"0","portfolio_margin":false,"status":"healthy"},"nonce":0,"owner":null,"units":[{"health":{"equity":"29629000000","initial":"0","maintenance":"0","margin_ratio":null,"notional":"0","portfolio_margin":false,"status":"healthy"},"in_margin_call":false,"liquidation_deferred":false,"market":null,"mode":"cross","positions":0},{"health":{"equity":"29560853300","initial":"6851741803","maintenance":"3444406804","margin_ratio":"8582277","notional":"136293399960","portfolio_margin":false,"status":"healthy"},"in_margin_call":false,"liquidation_deferred":false,"market":"ETH-PERP","mode":"isolated","positions":1}]}"#,
        );
        same_json(
            "positions 2",
            &positions_response(e, 2).expect("positions"),
            r#"{"account":2,"positions":[{"entry_price":"300000000000","feed":"ETH-USD","greeks":{"delta":"-45431133320000000000","gamma":"0","rho":"0","theta":"0","vega":"0"},"instrument":{"type":"perpetual"},"isolated_margin":"29560853300","mark_price":"300000000000","market":"ETH-PERP","mode":"isolated","side":"short","size":"-4543113332","underlying_price":"300000000000","unrealized_pnl":"0","value":"-136293399960"}]}"#,
        );
        same_json(
            "positions 3",
            &positions_response(e, 3).expect("positions"),
            r#"{"account":3,"positions":[{"entry_price":"6000000000000","feed":"BTC-USD","greeks":{"delta":"-998877770000000000","gamma":"0","rho":"0","theta":"0","vega":"0"},"instrument":{"expiry_ms":1769817600000,"type":"future"},"isolated_margin":null,"mark_price":"6000000000000","market":"BTC-FUT-30D","mode":"cross","side":"short","size":"-99887777","underlying_price":"6000000000000","unrealized_pnl":"0","value":"-59932666200"}]}"#,
        );
        same_json(
            "greeks 2",
            &greeks_response(e, 2).expect("greeks"),
            r#"{"account":2,"greeks":{"ETH-USD":{"delta":"-45431133320000000000","gamma":"0","rho":"0","theta":"0","vega":"0"}},"scale_note":"18 decimals (GREEK_SCALE = 1000000000000000000); delta in underlying units, vega per 1.00 vol, theta per year, rho per 1.00 rate","units":[{"greeks":{},"market":null,"mode":"cross"},{"greeks":{"ETH-USD":{"delta":"-45431133320000000000","gamma":"0","rho":"0","theta":"0","vega":"0"}},"market":"ETH-PERP","mode":"isolated"}]}"#,
        );
        let err = account_response(e, 99).err().expect("unknown account");
        assert_eq!(err.code, "unknown_account");
    }
}
