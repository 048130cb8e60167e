//! The engine: its state, construction, snapshots and the input entry point.
//! Each concern lives in its own module below.

use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_ceil, mul_div_floor, ppm_ceil, ppm_floor, sub, value};
use crate::index::{Band, Index, Key, Rank};
use crate::types::*;
use crate::unit_set::UnitSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

mod accounts;
mod bands;
mod commands;
mod deficit;
mod fills;
mod health;
mod liquidation;
mod prices;
mod root;
mod settlement;
pub(crate) mod snapshot;
mod triggers;
mod views;

pub use prices::{ReportTiming, surface_vol};
pub use snapshot::SnapshotSource;
pub use views::{AtRisk, Revaluation, UnitView};

/// Milliseconds per year (365 days, Hull's convention) for option time.
pub const YEAR_MS: f64 = 31_536_000_000.0;
/// `YEAR_MS` for integer money arithmetic.
const YEAR_MS_INT: i128 = 31_536_000_000;
const _: () = assert!(YEAR_MS_INT as f64 == YEAR_MS);
/// Longest time a unit holding options goes without a recheck (ms).
pub const MAX_RECHECK_MS: u64 = 3_600_000;
/// Most feeds one engine holds: the trigger index numbers them with a `u16`.
pub const MAX_FEEDS: usize = 1 << 16;

pub use crate::types::{GREEK_DECIMALS, GREEK_SCALE, Greeks};

/// Last accepted price of a feed (8 decimals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPrice {
    /// Price.
    pub price: i128,
    /// Confidence half-width.
    pub confidence: i128,
    /// Observation time.
    pub timestamp_ms: u64,
    /// Report round.
    pub round: u64,
    /// The leaf's status (`types::status`).
    #[serde(default)]
    pub status: u8,
    /// The leaf's flags.
    #[serde(default)]
    pub flags: u16,
    /// The leaf's EMA (8 decimals; 0: none).
    #[serde(default)]
    pub ema: i128,
    /// The leaf's realized volatility (1e9 = 100 % a year).
    #[serde(default)]
    pub volatility: u64,
}

/// A feed: config, last price, recent prices, guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// Configuration.
    pub config: FeedConfig,
    /// Last accepted price.
    pub last: Option<FeedPrice>,
    /// Recent prices, oldest first (at most `average_window`).
    pub recent: Vec<i128>,
    /// Jump detected on the last update, if any.
    pub jump: Option<GuardReason>,
    /// Current guard (None = prices are usable).
    pub guard: Option<GuardReason>,
    /// Requirement multiplier from the signed volatility (ppm; 1e6 = as
    /// configured; `VolScaling`).
    #[serde(default = "unit_multiplier")]
    pub vol_multiplier_ppm: u32,
}

fn unit_multiplier() -> u32 {
    1_000_000
}

/// Separates a feed id from the collateral slot suffix in trigger-index
/// slot names (feed ids cannot contain it: `ConfigureFeed` refuses control
/// characters).
const SLOT_SEP: char = '\u{0}';

/// The price at which a collateral balance of sign `qty` is valued: the
/// more conservative of the leaf's price and its EMA, the lower for a
/// holding and the higher for a debt (an EMA of 0, i.e. none, leaves the
/// price). A wick up does not lend against collateral the market has not
/// yet held at that price; a wick down still counts at once.
pub fn collateral_price(price: i128, ema: i128, qty: i128) -> i128 {
    if ema <= 0 {
        price
    } else if qty >= 0 {
        price.min(ema)
    } else {
        price.max(ema)
    }
}

/// The trigger-index slot of a feed's EMA (its value: the leaf's EMA, 0
/// without one). Units holding collateral priced by the feed keep a band
/// on it beside their band on the price, because the EMA moves their
/// collateral's value too.
pub(crate) fn ema_slot(feed: &str) -> String {
    format!("{feed}{SLOT_SEP}ema")
}

/// The feed an index slot name belongs to, and whether it is the feed's
/// EMA slot.
pub(crate) fn slot_feed(name: &str) -> Option<(&str, bool)> {
    match name.split_once(SLOT_SEP) {
        None => Some((name, false)),
        Some((feed, "ema")) => Some((feed, true)),
        Some(_) => None,
    }
}

/// The unit of index slot `slot`: 0 the cross pool, `n` the isolated
/// position in `market_by_slot[n - 1]`.
fn unit_of_slot(slot: u32, market_by_slot: &[String]) -> Option<Unit> {
    if slot == 0 {
        Some(Unit::Cross)
    } else {
        market_by_slot
            .get(slot as usize - 1)
            .map(|m| Unit::Isolated { market: m.clone() })
    }
}

impl FeedState {
    /// The portfolio-margin scenarios of this feed: the configured grid
    /// with its price moves scaled by the volatility multiplier.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let mut v = self.config.grid.scenarios();
        let m = i128::from(self.vol_multiplier_ppm);
        if m != 1_000_000 {
            let core =
                self.config.grid.price_moves_ppm.len() * self.config.grid.vol_shocks_ppm.len();
            for s in v.iter_mut().take(core) {
                let x = (i128::from(s.move_ppm) * m / 1_000_000).clamp(-990_000, 100_000_000);
                s.move_ppm = i32::try_from(x).unwrap_or(s.move_ppm);
            }
        }
        v
    }

    /// The weight (ppm) of scenario `i` in `scenarios()` (1e6 for the
    /// grid's moves, the extreme weight for its extremes, 1e6 past the
    /// end), without building the list.
    pub fn scenario_weight_ppm(&self, i: usize) -> i128 {
        let g = &self.config.grid;
        let core = g.price_moves_ppm.len() * g.vol_shocks_ppm.len();
        if (core..core + g.extreme_moves_ppm.len()).contains(&i) {
            i128::from(g.extreme_weight_ppm)
        } else {
            crate::fixed::PPM
        }
    }

    /// The price collateral of sign `qty` is valued at ([`collateral_price`]).
    pub fn collateral_price(&self, qty: i128) -> Option<i128> {
        let last = self.last.as_ref()?;
        Some(collateral_price(last.price, last.ema, qty))
    }

    /// Largest absolute scenario move (ppm), scaled.
    pub fn max_move_ppm(&self) -> i128 {
        self.scenarios()
            .iter()
            .map(|s| i128::from(s.move_ppm).abs())
            .max()
            .unwrap_or(0)
    }

    /// Bounds on how fast a weighted scenario loss moves per unit of price
    /// (ppm): `(option, delta_one)` = `max_s ceil(w_s (1 + |m_s|))` per
    /// option contract (times its delta bound) and `max_s ceil(w_s |m_s|)`
    /// per delta-one unit. Weighting matters: the extended table's +500 %
    /// counts at its weight, not in full.
    pub fn loss_slopes_ppm(&self) -> (i128, i128) {
        let (mut option, mut delta_one) = (0i128, 0i128);
        for s in self.scenarios() {
            let w = i128::from(s.weight_ppm);
            let m = i128::from(s.move_ppm).abs();
            option = option.max((w * (1_000_000 + m) + 999_999) / 1_000_000);
            delta_one = delta_one.max((w * m + 999_999) / 1_000_000);
        }
        (option, delta_one)
    }

    /// A linear base rate (ppm) scaled by the volatility multiplier, rounded up.
    pub fn scaled_rate_ppm(&self, base_ppm: u32) -> i128 {
        let m = i128::from(self.vol_multiplier_ppm);
        (i128::from(base_ppm) * m + 999_999) / 1_000_000
    }
}

/// A market's mark and scenario marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Mark price (option premium for options).
    pub price: i128,
    /// Underlying feed price used.
    pub underlying: i128,
    /// Mark under each portfolio-margin scenario of the feed's grid.
    pub scenarios: Vec<i128>,
    /// Greeks per contract.
    pub greeks: Greeks,
    /// Engine time of the marking.
    pub at_ms: u64,
}

/// A market: config, mark, settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketState {
    /// Configuration.
    pub config: MarketConfig,
    /// Stable slot number (order of first configuration).
    pub slot: u32,
    /// Current mark.
    pub mark: Option<Mark>,
    /// Settlement price once settled.
    pub settled: Option<i128>,
    /// A settlement deferral was reported (no repeats).
    pub settlement_deferred: bool,
}

/// The engine's complete state: serialize it to snapshot, compare two with
/// `==`. Indexes are derived from it on load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Schema version (`SCHEMA_VERSION`).
    pub version: u32,
    /// Engine clock: the latest timestamp seen.
    pub now_ms: u64,
    /// Next event sequence number.
    pub next_seq: u64,
    /// Risk parameters.
    pub risk: RiskParams,
    /// Feeds.
    pub feeds: BTreeMap<String, FeedState>,
    /// Collateral assets.
    pub assets: BTreeMap<String, AssetConfig>,
    /// Markets.
    pub markets: BTreeMap<String, MarketState>,
    /// Accounts, each shared copy-on-write, so a snapshot to encode is a
    /// cheap copy of the map (`Engine::snapshot_source`).
    pub accounts: BTreeMap<AccountId, Arc<Account>>,
    /// The venue (counterparty and liquidator side).
    pub venue: Venue,
    /// Insurance fund (money).
    pub insurance_fund: i128,
    /// Trading fees collected (money).
    pub fees: i128,
    /// Units currently in margin call.
    pub margin_calls: UnitSet,
    /// Units whose liquidation a guard deferred.
    pub deferred: UnitSet,
    /// Accounts in order of creation: their slots in the state root's
    /// account tree. A snapshot without it (older shape) takes id order.
    #[serde(default)]
    pub account_order: Vec<AccountId>,
}

/// The margin and liquidation engine.
#[derive(Clone, Debug)]
pub struct Engine {
    s: Snapshot,
    idx: Index,
    out: Vec<EventRecord>,
    pending: BTreeSet<Key>,
    /// Units examined and ranked whose trigger bands are not yet
    /// recomputed, with the health they were examined at: the band search
    /// is most of an examination's cost, and nothing an input decides
    /// waits for it (`Engine::settle`; docs/MARGIN.md, "Bands after the
    /// report"). Not part of the state.
    unbanded: BTreeMap<Key, (Unit, Health)>,
    /// The next `settle` also fills grid points of the next time bucket
    /// (set by each report).
    prefill_due: bool,
    market_by_slot: Vec<String>,
    /// Units examined since creation (a metric; not part of the state).
    examined: u64,
    /// Reference mode for tests: every price report examines every unit.
    exhaustive: bool,
    /// When the healths of the units to examine are computed ahead, over
    /// the cores (`liquidation::HealthAhead`; a runtime setting).
    ahead: liquidation::HealthAhead,
    /// Option values on the band price grid (a cache; not part of the state).
    grid: bands::GridCache,
    /// Bands that fell back to the whole-band bound (a metric).
    fallback_bands: u64,
    /// Where the last price report's time went (a metric).
    timing: prices::ReportTiming,
    /// The state root's maintained tree (derived; not part of the state).
    root: root::RootCache,
    /// The accounts of `s.accounts` by id, the same `Arc`s: a lookup is
    /// one hash probe instead of a walk down a million-entry B-tree (about
    /// 0.5 µs of cache misses each; an examination and a leaf each look
    /// one up). Derived, not part of the state: every change goes through
    /// [`Engine::put_account`], which sets both.
    by_id: accounts::AccountIndex,
    /// The committee whose book this is, named in every owner's signed
    /// bytes (context the node gives; not part of the state). `None`:
    /// signed commands are refused.
    committee: Option<crate::signed::CommitteeKey>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(RiskParams::default())
    }
}

/// One indexed unit, as stored in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedUnit {
    /// Account.
    pub account: AccountId,
    /// Unit.
    pub unit: Unit,
    /// Trigger bands `(feed, lo, hi)`.
    pub bands: Vec<(String, i128, i128)>,
    /// Time-based recheck.
    pub recheck_at_ms: Option<u64>,
    /// Place in the at-risk ranking `(class, equity / maintenance ppm)`
    /// from the unit's last examination (see `closest_to_liquidation`).
    #[serde(default)]
    pub rank: Option<(u8, i64)>,
}

impl Engine {
    /// An empty engine.
    pub fn new(risk: RiskParams) -> Self {
        let s = Snapshot {
            version: SCHEMA_VERSION,
            now_ms: 0,
            next_seq: 0,
            risk,
            feeds: BTreeMap::new(),
            assets: BTreeMap::new(),
            markets: BTreeMap::new(),
            accounts: BTreeMap::new(),
            venue: Venue::default(),
            insurance_fund: 0,
            fees: 0,
            margin_calls: UnitSet::new(),
            deferred: UnitSet::new(),
            account_order: Vec::new(),
        };
        Self {
            s,
            idx: Index::default(),
            out: Vec::new(),
            pending: BTreeSet::new(),
            unbanded: BTreeMap::new(),
            prefill_due: false,
            market_by_slot: Vec::new(),
            examined: 0,
            exhaustive: false,
            ahead: liquidation::HealthAhead::default(),
            grid: bands::GridCache::default(),
            fallback_bands: 0,
            timing: prices::ReportTiming::default(),
            root: root::RootCache::default(),
            by_id: Default::default(),
            committee: None,
        }
    }

    /// Binds the engine to `committee`: owners' signed commands verify only
    /// when signed for it (docs/MARGIN.md, "Account keys"). Context, not
    /// state: neither the state root nor a snapshot holds it, so a restored
    /// engine is given it again.
    pub fn set_committee(&mut self, committee: crate::signed::CommitteeKey) {
        self.committee = Some(committee);
    }

    /// The committee set by [`Engine::set_committee`].
    pub fn committee(&self) -> Option<&crate::signed::CommitteeKey> {
        self.committee.as_ref()
    }

    /// Restores an engine from a snapshot and rebuilds its indexes.
    pub fn from_snapshot(s: Snapshot) -> Result<Self, EngineError> {
        let mut e = Self::checked_shell(s)?;
        e.rebuild_index();
        Ok(e)
    }

    /// An engine holding `s` after checking it, with no index yet.
    fn checked_shell(s: Snapshot) -> Result<Self, EngineError> {
        if s.version != SCHEMA_VERSION {
            return Err(EngineError::SnapshotVersion {
                found: s.version,
                expected: SCHEMA_VERSION,
            });
        }
        if s.feeds.len() > MAX_FEEDS {
            return Err(EngineError::InvalidConfig {
                detail: format!(
                    "snapshot holds {} feeds, at most {MAX_FEEDS} are allowed",
                    s.feeds.len()
                ),
            });
        }
        let mut s = s;
        if s.account_order.is_empty() {
            s.account_order = s.accounts.keys().copied().collect();
        }
        // The same ids as the accounts: sorted, the order must equal the
        // map's keys (one linear pass instead of a lookup per account).
        let mut sorted = s.account_order.clone();
        sorted.sort_unstable();
        if s.account_order.len() != s.accounts.len() || !sorted.iter().eq(s.accounts.keys()) {
            return Err(EngineError::InvalidConfig {
                detail: format!(
                    "snapshot: account_order lists {} accounts but the snapshot holds {} (or names unknown ones); the snapshot is corrupt: restore another or replay the inputs",
                    s.account_order.len(),
                    s.accounts.len()
                ),
            });
        }
        let mut e = Engine::new(s.risk.clone());
        e.root = root::RootCache::for_order(&s.account_order)?;
        e.by_id = accounts::AccountIndex::from_map(
            s.accounts.iter().map(|(id, a)| (*id, a.clone())).collect(),
        );
        e.s = s;
        Ok(e)
    }

    /// A copy of the full state.
    pub fn snapshot(&self) -> Snapshot {
        self.s.clone()
    }

    /// Read access to the state.
    pub fn state(&self) -> &Snapshot {
        &self.s
    }

    /// Applies one stored input. On error nothing changed and no event was emitted.
    pub fn apply(&mut self, input: &Input) -> Result<Vec<EventRecord>, EngineError> {
        match input {
            Input::Prices(r) => self.apply_report(r),
            Input::Command { at_ms, command } => self.apply_command(*at_ms, command),
            Input::Signed { at_ms, signed } => self.apply_signed(*at_ms, signed),
        }
    }

    fn account(&self, account: AccountId) -> Result<&Account, EngineError> {
        self.acct(account)
            .map(|a| &**a)
            .ok_or(EngineError::UnknownAccount { account })
    }

    /// An account by id (the hash index, not the ordered map).
    fn acct(&self, account: AccountId) -> Option<&Arc<Account>> {
        self.by_id.get(&account)
    }

    /// Whether the account index holds exactly the state's accounts, the
    /// same `Arc`s (a check for tests: the index is derived and every
    /// change goes through [`Engine::put_account`]).
    pub fn account_index_matches_state(&self) -> bool {
        self.by_id.len() == self.s.accounts.len()
            && self
                .s
                .accounts
                .iter()
                .all(|(id, a)| self.by_id.get(id).is_some_and(|b| Arc::ptr_eq(a, b)))
    }

    /// Removes an account from the map and the index, to be changed and
    /// put back ([`Engine::put_account`]): its own copy unless a snapshot
    /// still shares it.
    fn take_account(&mut self, id: AccountId) -> Option<Account> {
        self.by_id.remove(&id);
        self.s.accounts.remove(&id).map(Arc::unwrap_or_clone)
    }

    /// Installs an account's new state: the ordered map and the index.
    /// The only way an account changes.
    fn put_account(&mut self, id: AccountId, account: Arc<Account>) {
        self.by_id.insert(id, account.clone());
        self.s.accounts.insert(id, account);
    }

    fn emit(&mut self, event: Event) {
        let seq = self.s.next_seq;
        self.s.next_seq += 1;
        self.out.push(EventRecord {
            seq,
            at_ms: self.s.now_ms,
            event,
        });
    }

    /// A snapshot with the trigger index, so a restored engine examines
    /// exactly the units the live one would.
    pub fn snapshot_with_index(&mut self) -> (Snapshot, Vec<IndexedUnit>) {
        (self.s.clone(), self.index_entries())
    }

    /// The trigger index entries, sorted by account and unit (after
    /// [`Engine::settle`]).
    pub fn index_entries(&mut self) -> Vec<IndexedUnit> {
        self.settle();
        indexed_units(&self.idx.frozen(), &self.market_by_slot)
    }

    /// Restores a snapshot together with its trigger index.
    pub fn restore(s: Snapshot, index: &[IndexedUnit]) -> Result<Self, EngineError> {
        let mut e = Self::from_snapshot(s)?;
        e.idx.clear_bands();
        for u in index {
            let Some(key) = e.key_of(u.account, &u.unit) else {
                continue;
            };
            let mut bands = Vec::with_capacity(u.bands.len());
            for (f, lo, hi) in &u.bands {
                // Only configured feeds have slots (and there are at most
                // MAX_FEEDS of them); a stored band on another is corrupt.
                let feed = e
                    .known_slot(f)
                    .then(|| e.idx.feed_slot(f))
                    .flatten()
                    .ok_or_else(|| EngineError::InvalidConfig {
                        detail: format!(
                            "stored trigger index: account {} {} has a band on unknown feed `{f}`",
                            u.account, u.unit
                        ),
                    })?;
                bands.push(Band {
                    feed,
                    lo: *lo,
                    hi: *hi,
                });
            }
            e.idx.insert(key, bands, u.recheck_at_ms);
            e.idx.set_rank(
                key,
                u.rank.map(|(class, ratio_ppm)| Rank { class, ratio_ppm }),
            );
        }
        Ok(e)
    }
}

/// The entries of a frozen index as `IndexedUnit`s, sorted by account and
/// unit (`market_by_slot` names the isolated units).
pub(crate) fn indexed_units(
    frozen: &crate::index::FrozenIndex,
    market_by_slot: &[String],
) -> Vec<IndexedUnit> {
    let mut units = Vec::new();
    for (key, bands, recheck, rank) in frozen.entries() {
        let unit = if key.slot == 0 {
            Unit::Cross
        } else {
            let Some(m) = market_by_slot.get(key.slot as usize - 1) else {
                continue;
            };
            Unit::Isolated { market: m.clone() }
        };
        let bands = bands
            .iter()
            .filter_map(|b| {
                let name = frozen.feed_names.get(usize::from(b.feed))?;
                Some((name.clone(), b.lo, b.hi))
            })
            .collect();
        units.push(IndexedUnit {
            account: key.account,
            unit,
            bands,
            recheck_at_ms: recheck,
            rank: rank.map(|r| (r.class, r.ratio_ppm)),
        });
    }
    units.sort_by(|a, b| a.account.cmp(&b.account).then(a.unit.cmp(&b.unit)));
    units
}
