//! Commands: validating an admin command into a plan on copies, then
//! committing it (nothing changes when validation fails).

use super::{Engine, FeedState, MAX_FEEDS, MarketState};
use crate::error::EngineError;
use crate::fixed::{QUOTE_ASSET, add, ppm_ceil, sub};
use crate::signed::SignedCommand;
use crate::types::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A validated command, ready to commit.
enum Plan {
    Config(Command),
    Fund(i128),
    Account {
        id: AccountId,
        acct: Account,
        extra: Vec<Event>,
        fee: i128,
        fills: Vec<(String, i128, i128, Event)>,
    },
}

impl Plan {
    /// A change to one account that emits one event and trades nothing.
    fn event(id: AccountId, acct: Account, event: Event) -> Plan {
        Plan::Account {
            id,
            acct,
            extra: vec![event],
            fee: 0,
            fills: vec![],
        }
    }
}

/// `Err(NonPositive)` unless `value` is above zero.
fn positive(what: &'static str, value: i128) -> Result<(), EngineError> {
    if value <= 0 {
        return Err(EngineError::NonPositive { what, value });
    }
    Ok(())
}

/// `Err(InsufficientMargin)` unless the unit's equity covers its initial
/// requirement (and is not negative).
fn meets_initial(account: AccountId, unit: &Unit, h: &Health) -> Result<(), EngineError> {
    if h.equity < h.initial || h.equity < 0 {
        return Err(EngineError::InsufficientMargin {
            account,
            unit: unit.to_string(),
            equity: h.equity,
            initial: h.initial,
        });
    }
    Ok(())
}

impl Engine {
    /// Applies an admin command stamped with its arrival time. On error
    /// nothing changed and no event was emitted.
    /// An unsigned command that moves the funds or positions of an account
    /// with an owner key is refused (`Unauthorized`): only the owner's
    /// signature moves them ([`Engine::apply_signed`]).
    pub fn apply_command(
        &mut self,
        at_ms: u64,
        cmd: &Command,
    ) -> Result<Vec<EventRecord>, EngineError> {
        if cmd.moves_funds()
            && let Some(id) = cmd.account()
            && self.acct(id).is_some_and(|a| a.owner.is_some())
        {
            return Err(EngineError::Unauthorized {
                account: id,
                kind: cmd.kind(),
            });
        }
        let now = self.s.now_ms.max(at_ms);
        // Validate and compute on copies; commit below.
        let plan = self.plan(now, cmd)?;
        self.apply_plan(now, cmd, plan)
    }

    /// Applies a command signed by its account's owner, stamped with its
    /// arrival time: [`Engine::check_signed`], then the command as
    /// `apply_command` would, storing the envelope's nonce as the
    /// account's. On error nothing changed and no event was emitted.
    pub fn apply_signed(
        &mut self,
        at_ms: u64,
        signed: &SignedCommand,
    ) -> Result<Vec<EventRecord>, EngineError> {
        let cmd = self.check_signed(signed)?;
        let now = self.s.now_ms.max(at_ms);
        let mut plan = self.plan(now, &cmd)?;
        match &mut plan {
            Plan::Account { id, acct, .. } if *id == signed.account => acct.nonce = signed.nonce,
            // Every signable command plans a change to its own account.
            _ => {
                return Err(EngineError::NotSignable { kind: cmd.kind() });
            }
        }
        self.apply_plan(now, &cmd, plan)
    }

    /// Whether `signed` would be taken now, as far as authorization goes:
    /// the engine knows its committee; the text is a command, one an owner
    /// may sign, on the envelope's account; the account has an owner (or,
    /// for `CreateAccount`, the command's own key is the signer); the nonce
    /// is above the account's; the signature verifies under the owner key
    /// for this committee. Returns the command. The command itself may
    /// still be refused (margin, balance, ...).
    pub fn check_signed(&self, signed: &SignedCommand) -> Result<Command, EngineError> {
        let committee = self.committee.as_ref().ok_or(EngineError::NoCommitteeKey)?;
        let cmd = signed.parse()?;
        if !cmd.signable() {
            return Err(EngineError::NotSignable { kind: cmd.kind() });
        }
        if cmd.account() != Some(signed.account) {
            return Err(EngineError::AccountMismatch {
                envelope: signed.account,
                command: cmd.account(),
            });
        }
        let (owner, current) = match &cmd {
            // Self-registration: the new account's key signs its creation.
            Command::CreateAccount {
                owner: Some(key), ..
            } => {
                if self.s.accounts.contains_key(&signed.account) {
                    return Err(EngineError::AccountExists {
                        account: signed.account,
                    });
                }
                crate::signed::check_owner_key(key)?;
                (*key, 0)
            }
            _ => {
                let a = self.account(signed.account)?;
                let owner = a.owner.ok_or(EngineError::NoOwner {
                    account: signed.account,
                })?;
                (owner, a.nonce)
            }
        };
        if signed.nonce <= current {
            return Err(EngineError::StaleNonce {
                account: signed.account,
                nonce: signed.nonce,
                current,
            });
        }
        if !signed.verifies(&owner, committee) {
            return Err(EngineError::BadSignature {
                account: signed.account,
            });
        }
        Ok(cmd)
    }

    /// Commits a validated plan at `now`.
    fn apply_plan(
        &mut self,
        now: u64,
        cmd: &Command,
        plan: Plan,
    ) -> Result<Vec<EventRecord>, EngineError> {
        self.out.clear();
        // Bands are computed at the clock of their examination: settle
        // them before it moves (a command at the report's time, as every
        // ordered command, leaves them to the caller's `settle`).
        if now != self.s.now_ms {
            self.settle();
        }
        self.s.now_ms = now;
        self.refresh_guards();
        if matches!(
            cmd,
            Command::ConfigureRisk(_)
                | Command::ConfigureFeed(_)
                | Command::ConfigureAsset(_)
                | Command::ConfigureMarket(_)
        ) {
            self.root.drop_configs();
        }
        self.commit(plan)?;
        // Due rechecks; a unit whose bands wait for `settle` was examined
        // at this clock already (settled, its recheck would be later).
        let mut due = BTreeSet::new();
        self.idx.due(self.s.now_ms, &mut due);
        due.retain(|k| !self.unbanded.contains_key(k));
        self.pending.extend(due);
        self.drain_pending();
        Ok(std::mem::take(&mut self.out))
    }

    fn check_ppm(what: &str, v: u32, max: u32) -> Result<(), EngineError> {
        if v > max {
            return Err(EngineError::InvalidConfig {
                detail: format!("{what} = {v} ppm, must be at most {max}"),
            });
        }
        Ok(())
    }

    /// `Err(UnknownAsset)` unless the collateral asset is configured.
    fn known_asset(&self, asset: &str) -> Result<(), EngineError> {
        if !self.s.assets.contains_key(asset) {
            return Err(EngineError::UnknownAsset {
                asset: asset.to_string(),
            });
        }
        Ok(())
    }

    /// `Err(GuardUp)` naming `market` while the feed's guard is up.
    fn check_guard(
        &self,
        feed: &str,
        now: u64,
        market: impl FnOnce() -> String,
    ) -> Result<(), EngineError> {
        match self.guard_at(feed, now) {
            Some(reason) => Err(EngineError::GuardUp {
                market: market(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn plan(&self, now: u64, cmd: &Command) -> Result<Plan, EngineError> {
        match cmd {
            Command::ConfigureRisk(r) => {
                Self::check_ppm(
                    "liquidation_buffer_ppm",
                    r.liquidation_buffer_ppm,
                    10_000_000,
                )?;
                if r.partial_steps_ppm
                    .iter()
                    .any(|s| *s == 0 || *s >= 1_000_000)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "partial_steps_ppm {:?}: each step must be in 1..1000000",
                            r.partial_steps_ppm
                        ),
                    });
                }
                if r.portfolio_initial_ratio_ppm < 1_000_000 {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "portfolio_initial_ratio_ppm = {}, must be >= 1000000",
                            r.portfolio_initial_ratio_ppm
                        ),
                    });
                }
                Self::check_ppm(
                    "margin_call_clear_buffer_ppm",
                    r.margin_call_clear_buffer_ppm,
                    10_000_000,
                )?;
                Self::check_ppm(
                    "max_liquidation_penalty_ppm",
                    r.max_liquidation_penalty_ppm,
                    1_000_000,
                )?;
                if r.option_recheck_ms == 0 {
                    return Err(EngineError::InvalidConfig {
                        detail: "option_recheck_ms must be > 0".into(),
                    });
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureFeed(f) => {
                if f.feed.is_empty() {
                    return Err(EngineError::InvalidConfig {
                        detail: "feed id is empty".into(),
                    });
                }
                if f.feed.chars().any(char::is_control) {
                    return Err(EngineError::InvalidConfig {
                        detail: format!("feed id {:?} contains a control character", f.feed),
                    });
                }
                if !self.s.feeds.contains_key(&f.feed) && self.s.feeds.len() >= MAX_FEEDS {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: the engine holds at most {MAX_FEEDS} feeds",
                            f.feed
                        ),
                    });
                }
                Self::check_ppm("max_jump_ppm", f.max_jump_ppm, 100_000_000)?;
                if let Some(v) = &f.vol_scaling
                    && (v.reference_volatility == 0
                        || v.step_ppm == 0
                        || !(1_000_000..=10_000_000).contains(&v.max_multiplier_ppm))
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: vol_scaling needs reference_volatility > 0, step_ppm > 0 and max_multiplier_ppm in 1000000..=10000000, got {v:?}",
                            f.feed
                        ),
                    });
                }
                let g = &f.grid;
                if g.price_moves_ppm.is_empty() || g.vol_shocks_ppm.is_empty() {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: the scenario grid needs at least one price move and one vol shock",
                            f.feed
                        ),
                    });
                }
                if g.price_moves_ppm
                    .iter()
                    .chain(&g.extreme_moves_ppm)
                    .chain(&g.vol_shocks_ppm)
                    .any(|m| *m <= -1_000_000 || *m > 10_000_000)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: scenario moves and shocks must be in (-1000000, 10000000] ppm",
                            f.feed
                        ),
                    });
                }
                Self::check_ppm("extreme_weight_ppm", g.extreme_weight_ppm, 1_000_000)?;
                if let Some(s) = &f.vol_surface {
                    let sorted = s.slices.windows(2).all(|w| w[0].expiry_ms < w[1].expiry_ms)
                        && s.slices.iter().all(|sl| {
                            !sl.points.is_empty()
                                && sl.points.windows(2).all(|w| w[0].strike < w[1].strike)
                                && sl.points.iter().all(|p| p.vol_ppm > 0)
                        });
                    if s.slices.is_empty() || !sorted {
                        return Err(EngineError::InvalidConfig {
                            detail: format!(
                                "feed `{}`: vol surface slices must be sorted by expiry, points by strike, vols > 0",
                                f.feed
                            ),
                        });
                    }
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureAsset(a) => {
                if a.asset == QUOTE_ASSET {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "`{QUOTE_ASSET}` is the quote asset, not a collateral asset"
                        ),
                    });
                }
                if !self.s.feeds.contains_key(&a.feed) {
                    return Err(EngineError::UnknownFeed {
                        feed: a.feed.clone(),
                    });
                }
                Self::check_ppm("haircut_ppm", a.haircut_ppm, 1_000_000)?;
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureMarket(m) => {
                if !self.s.feeds.contains_key(&m.feed) {
                    return Err(EngineError::UnknownFeed {
                        feed: m.feed.clone(),
                    });
                }
                Self::check_ppm("max_rate_ppm", m.max_rate_ppm, 1_000_000)?;
                Self::check_ppm("initial_ppm", m.initial_ppm, m.max_rate_ppm)?;
                Self::check_ppm("maintenance_ppm", m.maintenance_ppm, m.initial_ppm)?;
                if let Some(k) = &m.concentration
                    && k.liquidity_notional <= 0
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "market `{}`: concentration liquidity_notional must be > 0 (money), got {}",
                            m.market, k.liquidity_notional
                        ),
                    });
                }
                Self::check_ppm("taker_fee_ppm", m.taker_fee_ppm, 100_000)?;
                Self::check_ppm(
                    "liquidation_penalty_ppm",
                    m.liquidation_penalty_ppm,
                    500_000,
                )?;
                Self::check_ppm("liquidator_share_ppm", m.liquidator_share_ppm, 1_000_000)?;
                if let Some(old) = self.s.markets.get(&m.market)
                    && (old.config.kind != m.kind || old.config.feed != m.feed)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "market `{}`: its feed and instrument cannot change; configure a new market",
                            m.market
                        ),
                    });
                }
                // A new market must still be tradeable: one already expired
                // would take no trade and settle on its first price.
                if let Some(expiry_ms) = m.kind.expiry_ms()
                    && expiry_ms <= now
                    && !self.s.markets.contains_key(&m.market)
                {
                    return Err(EngineError::ExpiryInPast {
                        market: m.market.clone(),
                        expiry_ms,
                        now_ms: now,
                    });
                }
                if let MarketKind::Option { strike, vol, .. } = &m.kind {
                    positive("option strike", *strike)?;
                    match vol {
                        VolSource::Fixed { vol_ppm } if *vol_ppm == 0 => {
                            return Err(EngineError::InvalidConfig {
                                detail: format!("market `{}`: vol must be > 0", m.market),
                            });
                        }
                        VolSource::Surface
                            if self
                                .s
                                .feeds
                                .get(&m.feed)
                                .is_none_or(|f| f.config.vol_surface.is_none()) =>
                        {
                            return Err(EngineError::InvalidConfig {
                                detail: format!(
                                    "market `{}` uses the vol surface but feed `{}` has none",
                                    m.market, m.feed
                                ),
                            });
                        }
                        _ => {}
                    }
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::CreateAccount { account, owner } => {
                if self.s.accounts.contains_key(account) {
                    return Err(EngineError::AccountExists { account: *account });
                }
                if let Some(key) = owner {
                    crate::signed::check_owner_key(key)?;
                }
                Ok(Plan::event(
                    *account,
                    Account {
                        owner: *owner,
                        ..Account::default()
                    },
                    Event::AccountCreated {
                        account: *account,
                        owner: *owner,
                    },
                ))
            }
            Command::Deposit {
                account,
                asset,
                amount,
            } => {
                positive("deposit amount", *amount)?;
                let mut a = self.account(*account)?.clone();
                if asset == QUOTE_ASSET {
                    a.cash = add(a.cash, *amount, "cash")?;
                } else {
                    self.known_asset(asset)?;
                    let e = a.collateral.entry(asset.clone()).or_insert(0);
                    *e = add(*e, *amount, "collateral")?;
                }
                let ev = Event::Deposited {
                    account: *account,
                    asset: asset.clone(),
                    amount: *amount,
                };
                Ok(Plan::event(*account, a, ev))
            }
            Command::Withdraw {
                account,
                asset,
                amount,
            } => {
                positive("withdrawal amount", *amount)?;
                let mut a = self.account(*account)?.clone();
                let available = if asset == QUOTE_ASSET {
                    a.cash
                } else {
                    self.known_asset(asset)?;
                    a.collateral.get(asset).copied().unwrap_or(0)
                };
                if available < *amount {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: asset.clone(),
                        available,
                        requested: *amount,
                    });
                }
                if asset == QUOTE_ASSET {
                    a.cash -= amount;
                } else if let Some(q) = a.collateral.get_mut(asset) {
                    *q -= amount;
                    if *q == 0 {
                        a.collateral.remove(asset);
                    }
                }
                let has_positions = !Self::unit_positions(&a, &Unit::Cross).is_empty();
                if has_positions {
                    // Money leaving while the account has risk needs reliable prices.
                    let feeds = self.unit_feeds(&a, &Unit::Cross);
                    for f in &feeds {
                        self.check_guard(f, now, || format!("feed {f}"))?;
                    }
                }
                let h = self.health_of(&a, &Unit::Cross)?;
                meets_initial(*account, &Unit::Cross, &h)?;
                let ev = Event::Withdrawn {
                    account: *account,
                    asset: asset.clone(),
                    amount: *amount,
                    health_after: h,
                };
                Ok(Plan::event(*account, a, ev))
            }
            Command::Open {
                account,
                market,
                side,
                size,
                margin,
                price,
            } => {
                positive("position size", *size)?;
                let d = match side {
                    Side::Long => *size,
                    Side::Short => size
                        .checked_neg()
                        .ok_or_else(|| crate::fixed::overflow("size"))?,
                };
                self.plan_trade(now, *account, market, d, Some(*margin), *price)
            }
            Command::Close {
                account,
                market,
                size,
                price,
            } => {
                let a = self.account(*account)?;
                let held = a.positions.get(market).map(|p| p.size).ok_or_else(|| {
                    EngineError::NoPosition {
                        account: *account,
                        market: market.clone(),
                    }
                })?;
                let c = match size {
                    None => held.abs(),
                    Some(s) if *s <= 0 => {
                        return Err(EngineError::NonPositive {
                            what: "close size",
                            value: *s,
                        });
                    }
                    Some(s) if *s > held.abs() => {
                        return Err(EngineError::ExceedsPosition {
                            account: *account,
                            market: market.clone(),
                            size: *s,
                            held: held.abs(),
                        });
                    }
                    Some(s) => *s,
                };
                self.plan_trade(now, *account, market, -held.signum() * c, None, *price)
            }
            Command::AdjustIsolatedMargin {
                account,
                market,
                delta,
            } => {
                if *delta == 0 {
                    return Err(EngineError::NonPositive {
                        what: "margin adjustment",
                        value: 0,
                    });
                }
                let mut a = self.account(*account)?.clone();
                let pool = a
                    .positions
                    .get(market)
                    .and_then(|p| p.isolated)
                    .ok_or_else(|| EngineError::NoPosition {
                        account: *account,
                        market: format!("{market} (isolated)"),
                    })?;
                if *delta > 0 && a.cash < *delta {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: QUOTE_ASSET.into(),
                        available: a.cash,
                        requested: *delta,
                    });
                }
                if *delta < 0 && pool < -*delta {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: format!("{market} pool"),
                        available: pool,
                        requested: -*delta,
                    });
                }
                a.cash = sub(a.cash, *delta, "cash")?;
                let unit = Unit::Isolated {
                    market: market.clone(),
                };
                Self::credit(&mut a, &unit, *delta)?;
                if *delta < 0 {
                    if let Some(m) = self.s.markets.get(market) {
                        self.check_guard(&m.config.feed, now, || market.clone())?;
                    }
                    let h = self.health_of(&a, &unit)?;
                    if h.equity < h.initial {
                        return Err(EngineError::InsufficientMargin {
                            account: *account,
                            unit: unit.to_string(),
                            equity: h.equity,
                            initial: h.initial,
                        });
                    }
                }
                let ev = Event::IsolatedMarginAdjusted {
                    account: *account,
                    market: market.clone(),
                    delta: *delta,
                    pool_after: add(pool, *delta, "pool")?,
                };
                Ok(Plan::event(*account, a, ev))
            }
            Command::FundInsurance { amount } => {
                positive("insurance funding", *amount)?;
                add(self.s.insurance_fund, *amount, "insurance fund")?;
                Ok(Plan::Fund(*amount))
            }
        }
    }

    /// A trade of signed size `d` against the venue at `fill` (the mark
    /// when None; else within the mark ± (initial - maintenance) rate).
    /// `margin` is Some for Open (new risk allowed), None for Close.
    fn plan_trade(
        &self,
        now: u64,
        account: AccountId,
        market: &str,
        d: i128,
        margin: Option<MarginMode>,
        fill: Option<i128>,
    ) -> Result<Plan, EngineError> {
        let ms = self.market_state(market)?;
        if ms.settled.is_some() {
            return Err(EngineError::Settled {
                market: market.to_string(),
            });
        }
        let mut a = self.account(account)?.clone();
        let existing = a.positions.get(market).cloned();
        let s0 = existing.as_ref().map_or(0, |p| p.size);
        let s1 = add(s0, d, "position size")?;
        let adds_risk = s1.abs() > s0.abs() || (s0 != 0 && s1.signum() != s0.signum());
        if adds_risk {
            if let Some(exp) = ms.config.kind.expiry_ms()
                && now >= exp
            {
                return Err(EngineError::Expired {
                    market: market.to_string(),
                    expiry_ms: exp,
                });
            }
            self.check_guard(&ms.config.feed, now, || market.to_string())?;
        }
        let mark = ms.mark.as_ref().ok_or_else(|| EngineError::NoPrice {
            market: market.to_string(),
            feed: ms.config.feed.clone(),
        })?;
        let price =
            match fill {
                None => mark.price,
                Some(px) => {
                    let fs = self.s.feeds.get(&ms.config.feed).ok_or_else(|| {
                        EngineError::UnknownFeed {
                            feed: ms.config.feed.clone(),
                        }
                    })?;
                    let gap = fs.scaled_rate_ppm(ms.config.initial_ppm)
                        - fs.scaled_rate_ppm(ms.config.maintenance_ppm);
                    let band = crate::fixed::mul_div_floor(
                        mark.price,
                        gap.max(0),
                        crate::fixed::PPM,
                        "price band",
                    )?;
                    if px <= 0 || (px - mark.price).abs() > band {
                        return Err(EngineError::PriceOutsideBand {
                            market: market.to_string(),
                            price: px,
                            mark: mark.price,
                            band,
                        });
                    }
                    px
                }
            };
        let isolated_now = existing.as_ref().map(|p| p.isolated.is_some());
        let unit = match (margin, isolated_now) {
            (Some(MarginMode::Cross), Some(true)) => {
                return Err(EngineError::MarginModeConflict {
                    account,
                    market: market.to_string(),
                    held: "isolated",
                });
            }
            (Some(MarginMode::Isolated { .. }), Some(false)) => {
                return Err(EngineError::MarginModeConflict {
                    account,
                    market: market.to_string(),
                    held: "cross",
                });
            }
            (Some(MarginMode::Isolated { collateral }), _) => {
                if collateral < 0 {
                    return Err(EngineError::NonPositive {
                        what: "isolated collateral",
                        value: collateral,
                    });
                }
                if a.cash < collateral {
                    return Err(EngineError::InsufficientBalance {
                        account,
                        asset: QUOTE_ASSET.into(),
                        available: a.cash,
                        requested: collateral,
                    });
                }
                a.cash -= collateral;
                let p = a.positions.entry(market.to_string()).or_default();
                p.isolated = Some(add(p.isolated.unwrap_or(0), collateral, "isolated pool")?);
                Unit::Isolated {
                    market: market.to_string(),
                }
            }
            (_, Some(true)) => Unit::Isolated {
                market: market.to_string(),
            },
            _ => Unit::Cross,
        };
        let pos = a.positions.entry(market.to_string()).or_default();
        let (paid, realized) = Self::fill(pos, d, price)?;
        let fee = ppm_ceil(paid.abs(), i128::from(ms.config.taker_fee_ppm))?;
        Self::credit(&mut a, &unit, realized)?;
        Self::credit(&mut a, &unit, -fee)?;
        if adds_risk {
            let h = self.health_of(&a, &unit)?;
            meets_initial(account, &unit, &h)?;
            if unit != Unit::Cross {
                // Funding the pool took cash from the cross pool.
                let hc = self.health_of(&a, &Unit::Cross)?;
                meets_initial(account, &Unit::Cross, &hc)?;
            }
        }
        let reason = FillReason::Trade;
        let ev = Event::Filled {
            account,
            market: market.to_string(),
            size: d,
            price,
            fee,
            realized,
            reason,
        };
        Ok(Plan::Account {
            id: account,
            acct: a,
            extra: vec![],
            fee,
            fills: vec![(market.to_string(), d, paid, ev)],
        })
    }

    fn commit(&mut self, plan: Plan) -> Result<(), EngineError> {
        match plan {
            Plan::Config(cmd) => self.commit_config(cmd),
            Plan::Fund(amount) => {
                self.s.insurance_fund = add(self.s.insurance_fund, amount, "insurance fund")?;
                self.emit(Event::InsuranceFund {
                    delta: amount,
                    balance: self.s.insurance_fund,
                    reason: InsuranceReason::Funded,
                });
                Ok(())
            }
            Plan::Account {
                id,
                mut acct,
                extra,
                fee,
                fills,
            } => {
                for (m, d, paid, _) in &fills {
                    self.venue_fill(m, *d, *paid)?;
                }
                self.s.fees = add(self.s.fees, fee, "fees")?;
                self.tidy(id, &mut acct)?;
                self.put_account(id, Arc::new(acct));
                self.touch(id);
                for e in extra {
                    self.emit(e);
                }
                for (_, _, _, e) in fills {
                    self.emit(e);
                }
                // Examine the account's units now: a close below maintenance
                // still liquidates, and the index learns the new bands.
                self.queue_account(id);
                self.drain_pending();
                Ok(())
            }
        }
    }

    fn commit_config(&mut self, cmd: Command) -> Result<(), EngineError> {
        self.grid.clear();
        match cmd {
            Command::ConfigureRisk(r) => {
                self.s.risk = r.clone();
                self.emit(Event::RiskConfigured(r));
            }
            Command::ConfigureFeed(f) => {
                let name = f.feed.clone();
                match self.s.feeds.get_mut(&name) {
                    Some(fs) => {
                        fs.config = f.clone();
                        let vol = fs.last.as_ref().map_or(0, |l| l.volatility);
                        fs.vol_multiplier_ppm = f
                            .vol_scaling
                            .as_ref()
                            .map_or(1_000_000, |v| v.next_ppm(0, vol));
                    }
                    None => {
                        self.s.feeds.insert(
                            name.clone(),
                            FeedState {
                                config: f.clone(),
                                last: None,
                                recent: Vec::new(),
                                jump: None,
                                guard: Some(GuardReason::NoPrice),
                                vol_multiplier_ppm: 1_000_000,
                            },
                        );
                    }
                }
                // Some: `plan` keeps the feeds within MAX_FEEDS.
                let _slot = self.idx.feed_slot(&name);
                self.emit(Event::FeedConfigured(f));
                self.refresh_guards();
                self.remark_feed(&name);
            }
            Command::ConfigureAsset(a) => {
                self.s.assets.insert(a.asset.clone(), a.clone());
                self.emit(Event::AssetConfigured(a));
            }
            Command::ConfigureMarket(m) => {
                let name = m.market.clone();
                let feed = m.feed.clone();
                match self.s.markets.get_mut(&name) {
                    Some(ms) => ms.config = m.clone(),
                    None => {
                        // Checked before anything changes (the grid cache is
                        // only a cache).
                        let slot = u32::try_from(self.market_by_slot.len())
                            .map_err(|_| crate::fixed::overflow("market slot"))?;
                        self.market_by_slot.push(name.clone());
                        self.s.markets.insert(
                            name.clone(),
                            MarketState {
                                config: m.clone(),
                                slot,
                                mark: None,
                                settled: None,
                                settlement_deferred: false,
                            },
                        );
                    }
                }
                self.emit(Event::MarketConfigured(m));
                self.remark_feed(&feed);
            }
            _ => {}
        }
        // Requirements may have changed: look at every unit again. Config
        // changes are rare; this is the simple, obviously correct choice.
        self.queue_every_unit();
        self.drain_pending();
        Ok(())
    }
}
