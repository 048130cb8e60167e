//! The stored snapshot: the whole state and the trigger index in one
//! deterministic byte string, compact where it is large (accounts, flags,
//! index entries in binary) and JSON where it is small and varied (risk,
//! feeds, assets, markets, venue). Restoring it rebuilds nothing that the
//! bytes already hold: no health is evaluated, so a restart at a million
//! accounts costs decoding plus index insertion.
//!
//! ```text
//! "SIBYLMS3" ‖ head_len:u32 ‖ head JSON (Snapshot without accounts, order, flags)
//!   ‖ accounts:u64 ‖ { id:u64 ‖ cash:i128 ‖ collateral ‖ positions
//!                      ‖ keys: 0 | 1 ‖ owner:32 ‖ nonce:u64 }   (slot order)
//!   ‖ margin_calls:u64 ‖ { id:u64 ‖ unit }   ‖ deferred:u64 ‖ { id:u64 ‖ unit }
//!   ‖ index:u64 ‖ { id:u64 ‖ unit ‖ bands:u32 ‖ {feed:str ‖ lo:i128 ‖ hi:i128} ‖ recheck:opt u64
//!                   ‖ rank:opt (class:u8 ‖ ratio_ppm:i64) }
//! ```
//! `"SIBYLMS2"` snapshots (no `keys`) decode with no owner and nonce 0;
//! `"SIBYLMS1"` snapshots (no `keys`, no `rank`) too, their ranking rebuilt
//! by evaluating every indexed unit once.
//! Encodings of integers, strings, maps and units as in the state root.

use super::{Engine, Snapshot};
use crate::error::EngineError;
use crate::index::{Band, Rank};
use crate::state_root::Enc;
use crate::types::*;
use crate::unit_set::UnitSet;
use std::collections::BTreeMap;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SIBYLMS3";

/// A snapshot taken but not yet encoded (`Engine::snapshot_source`).
pub struct SnapshotSource {
    head: Vec<u8>,
    accounts: BTreeMap<AccountId, Arc<Account>>,
    order: Vec<AccountId>,
    margin_calls: UnitSet,
    deferred: UnitSet,
    /// The trigger index (maps of shared bands).
    index: crate::index::FrozenIndex,
    market_by_slot: Vec<String>,
}

impl SnapshotSource {
    /// The snapshot's bytes (layout above).
    pub fn encode(self) -> Result<Vec<u8>, EngineError> {
        let mut e = Enc(Vec::with_capacity(
            64 + self.head.len() + self.accounts.len() * 240,
        ));
        e.0.extend_from_slice(MAGIC);
        e.u32(u32::try_from(self.head.len()).map_err(|_| corrupt("head too large"))?);
        e.0.extend_from_slice(&self.head);
        e.u64(self.order.len() as u64);
        for id in &self.order {
            let a = self
                .accounts
                .get(id)
                .ok_or_else(|| corrupt(format!("account_order names unknown account {id}")))?;
            e.u64(*id);
            e.balances(a.cash, &a.collateral);
            e.positions(&a.positions);
            match a.owner {
                None => e.u8(0),
                Some(_) => e.keys(a),
            }
        }
        for set in [&self.margin_calls, &self.deferred] {
            e.u64(set.len() as u64);
            for (id, u) in set.iter() {
                e.u64(id);
                e.unit(u);
            }
        }
        let index = super::indexed_units(&self.index, &self.market_by_slot);
        e.u64(index.len() as u64);
        for u in &index {
            e.u64(u.account);
            e.unit(&u.unit);
            e.count(u.bands.len());
            for (f, lo, hi) in &u.bands {
                e.str(f);
                e.i128(*lo);
                e.i128(*hi);
            }
            match u.recheck_at_ms {
                None => e.u8(0),
                Some(t) => {
                    e.u8(1);
                    e.u64(t);
                }
            }
            match u.rank {
                None => e.u8(0),
                Some((class, ratio)) => {
                    e.u8(1);
                    e.u8(class);
                    e.u64(ratio.cast_unsigned());
                }
            }
        }
        Ok(e.0)
    }
}
/// The layout before the at-risk ranking was stored.
const MAGIC_V1: &[u8; 8] = b"SIBYLMS1";
/// The layout before account keys (no owner byte after each account).
const MAGIC_V2: &[u8; 8] = b"SIBYLMS2";

fn corrupt(detail: impl Into<String>) -> EngineError {
    EngineError::SnapshotCorrupt {
        detail: detail.into(),
    }
}

/// Decodes [`crate::state_root::AccountState::encode`] bytes (an account
/// proof's leaf preimage): the account id, its balances and positions, its
/// units in margin call and deferred. Refuses trailing bytes and any bytes
/// that do not re-encode to themselves (a repeated or misordered name).
pub(crate) fn decode_account_state(
    bytes: &[u8],
) -> Result<crate::state_root::AccountState, EngineError> {
    let mut d = Dec { b: bytes, at: 0 };
    let account = d.u64()?;
    let state = d.account()?;
    let mut units = || -> Result<Vec<Unit>, EngineError> {
        let mut out = Vec::new();
        for _ in 0..d.len()? {
            out.push(d.unit()?);
        }
        Ok(out)
    };
    let margin_calls = units()?;
    let deferred = units()?;
    // The owner extension: present only for an account with an owner.
    let mut state = state;
    if d.at != bytes.len() {
        d.keys(&mut state)?;
    }
    if d.at != bytes.len() {
        return Err(corrupt(format!(
            "{} bytes after the account state",
            bytes.len() - d.at
        )));
    }
    let st = crate::state_root::AccountState {
        account,
        state,
        margin_calls,
        deferred,
    };
    if st.encode() != bytes {
        return Err(corrupt(
            "the account state is not in its canonical encoding",
        ));
    }
    Ok(st)
}

/// Reads what `Enc` wrote; every read is bounds-checked.
struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EngineError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| corrupt(format!("truncated at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], EngineError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, EngineError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, EngineError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, EngineError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn i128(&mut self) -> Result<i128, EngineError> {
        Ok(i128::from_be_bytes(self.arr()?))
    }
    fn len(&mut self) -> Result<usize, EngineError> {
        usize::try_from(self.u32()?).map_err(|_| corrupt("length does not fit"))
    }
    fn count64(&mut self) -> Result<usize, EngineError> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("count does not fit"))
    }
    fn str(&mut self) -> Result<String, EngineError> {
        self.str_ref().map(str::to_string)
    }
    /// A name, borrowed from the bytes (no allocation).
    fn str_ref(&mut self) -> Result<&'a str, EngineError> {
        let n = usize::from(u16::from_be_bytes(self.arr()?));
        std::str::from_utf8(self.take(n)?).map_err(|_| corrupt("a name is not UTF-8"))
    }
    fn opt_i128(&mut self) -> Result<Option<i128>, EngineError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i128()?)),
            t => Err(corrupt(format!("option tag {t}"))),
        }
    }
    fn unit(&mut self) -> Result<Unit, EngineError> {
        match self.u8()? {
            0 => Ok(Unit::Cross),
            1 => Ok(Unit::Isolated {
                market: self.str()?,
            }),
            t => Err(corrupt(format!("unit tag {t}"))),
        }
    }
    /// `Enc::keys` after its presence was established: `0x01 ‖ owner ‖ nonce`.
    fn owner_key(&mut self, acct: &mut Account) -> Result<(), EngineError> {
        acct.owner = Some(self.arr::<32>()?);
        acct.nonce = self.u64()?;
        Ok(())
    }
    /// The owner extension of a leaf (present: it must start with 0x01).
    fn keys(&mut self, acct: &mut Account) -> Result<(), EngineError> {
        match self.u8()? {
            1 => self.owner_key(acct),
            t => Err(corrupt(format!("owner tag {t}"))),
        }
    }
    /// A snapshot's `0 | 0x01 ‖ owner ‖ nonce` (SIBYLMS3).
    fn snapshot_keys(&mut self, acct: &mut Account) -> Result<(), EngineError> {
        match self.u8()? {
            0 => Ok(()),
            1 => self.owner_key(acct),
            t => Err(corrupt(format!("owner tag {t}"))),
        }
    }
    fn account(&mut self) -> Result<Account, EngineError> {
        let cash = self.i128()?;
        let mut collateral = BTreeMap::new();
        for _ in 0..self.len()? {
            let a = self.str()?;
            collateral.insert(a, self.i128()?);
        }
        let mut positions = BTreeMap::new();
        for _ in 0..self.len()? {
            let m = self.str()?;
            let size = self.i128()?;
            let quote = self.i128()?;
            let isolated = self.opt_i128()?;
            positions.insert(
                m,
                Position {
                    size,
                    quote,
                    isolated,
                },
            );
        }
        Ok(Account {
            cash,
            collateral,
            positions,
            owner: None,
            nonce: 0,
        })
    }
}

impl Engine {
    /// The state and trigger index as deterministic bytes (layout above):
    /// the same state gives the same bytes on every member.
    pub fn encode_snapshot(&mut self) -> Result<Vec<u8>, EngineError> {
        self.snapshot_source()?.encode()
    }

    /// What `encode_snapshot` writes, taken cheaply: the small parts
    /// encoded, the accounts as a copy of the map of shared accounts and
    /// the trigger index as copies of its maps of shared bands (no account
    /// or band is copied; a later change to one replaces it). `SnapshotSource::encode` then runs without the
    /// engine, e.g. on another thread while the engine takes the next
    /// report, and gives the bytes `encode_snapshot` gives now.
    ///
    /// Settles the trigger bands first ([`Engine::settle`]): a snapshot
    /// holds a complete index.
    pub fn snapshot_source(&mut self) -> Result<SnapshotSource, EngineError> {
        self.settle();
        let s = &self.s;
        let head = Snapshot {
            version: s.version,
            now_ms: s.now_ms,
            next_seq: s.next_seq,
            risk: s.risk.clone(),
            feeds: s.feeds.clone(),
            assets: s.assets.clone(),
            markets: s.markets.clone(),
            accounts: BTreeMap::new(),
            venue: s.venue.clone(),
            insurance_fund: s.insurance_fund,
            fees: s.fees,
            margin_calls: UnitSet::new(),
            deferred: UnitSet::new(),
            account_order: Vec::new(),
        };
        let head = serde_json::to_vec(&head).map_err(|e| corrupt(e.to_string()))?;
        Ok(SnapshotSource {
            head,
            accounts: s.accounts.clone(),
            order: s.account_order.clone(),
            margin_calls: s.margin_calls.clone(),
            deferred: s.deferred.clone(),
            index: self.idx.frozen(),
            market_by_slot: self.market_by_slot.clone(),
        })
    }

    /// Restores `encode_snapshot` bytes: the same state, index and future
    /// events as the engine that wrote them, without re-evaluating any unit.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Engine, EngineError> {
        let mut d = Dec { b: bytes, at: 0 };
        let version = match d.take(MAGIC.len())? {
            m if m == MAGIC => 3,
            m if m == MAGIC_V2 => 2,
            m if m == MAGIC_V1 => 1,
            _ => return Err(corrupt("not a margin snapshot (bad magic)")),
        };
        let v1 = version == 1;
        let head_len = d.len()?;
        let mut s: Snapshot =
            serde_json::from_slice(d.take(head_len)?).map_err(|e| corrupt(e.to_string()))?;
        let n = d.count64()?;
        let mut order = Vec::with_capacity(n.min(1 << 24));
        let mut accounts = Vec::with_capacity(n.min(1 << 24));
        for _ in 0..n {
            let id = d.u64()?;
            let mut a = d.account()?;
            if version >= 3 {
                d.snapshot_keys(&mut a)?;
            }
            accounts.push((id, Arc::new(a)));
            order.push(id);
        }
        // One sorted bulk build instead of a million ordered inserts.
        accounts.sort_unstable_by_key(|(id, _)| *id);
        if let Some(w) = accounts.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(corrupt(format!("account {} appears twice", w[0].0)));
        }
        if let Some((id, _)) = accounts.iter().find(|(id, _)| s.accounts.contains_key(id)) {
            return Err(corrupt(format!("account {id} appears twice")));
        }
        if s.accounts.is_empty() {
            s.accounts = accounts.into_iter().collect();
        } else {
            s.accounts.extend(accounts);
        }
        s.account_order = order;
        for set in [&mut s.margin_calls, &mut s.deferred] {
            for _ in 0..d.count64()? {
                let id = d.u64()?;
                set.insert((id, d.unit()?));
            }
        }
        let mut e = Engine::unindexed(s)?;
        let units = d.count64()?;
        let mut entries = Vec::with_capacity(units.min(1 << 24));
        for _ in 0..units {
            let account = d.u64()?;
            let unit = d.unit()?;
            let nb = d.len()?;
            let mut bands = Vec::with_capacity(nb.min(64));
            for _ in 0..nb {
                let f = d.str_ref()?;
                let lo = d.i128()?;
                let hi = d.i128()?;
                let feed = e
                    .known_slot(f)
                    .then(|| e.idx.feed_slot(f))
                    .flatten()
                    .ok_or_else(|| corrupt(format!("band on unknown feed `{f}`")))?;
                bands.push(Band { feed, lo, hi });
            }
            let recheck = match d.u8()? {
                0 => None,
                1 => Some(d.u64()?),
                t => return Err(corrupt(format!("recheck tag {t}"))),
            };
            let rank = match if v1 { 0 } else { d.u8()? } {
                0 => None,
                1 => Some(Rank {
                    class: d.u8()?,
                    ratio_ppm: d.u64()?.cast_signed(),
                }),
                t => return Err(corrupt(format!("rank tag {t}"))),
            };
            let key = e
                .key_of(account, &unit)
                .ok_or_else(|| corrupt(format!("index entry for unknown unit {account} {unit}")))?;
            entries.push((key, bands, recheck, rank));
        }
        e.idx.load(entries).map_err(|key| {
            corrupt(format!(
                "index entry for account {} slot {} appears twice",
                key.account, key.slot
            ))
        })?;
        if v1 {
            e.rank_every_unit();
        }
        if d.at != bytes.len() {
            return Err(corrupt(format!(
                "{} trailing bytes",
                bytes.len().saturating_sub(d.at)
            )));
        }
        Ok(e)
    }

    /// An engine over `s` with feed and market slots and position holders
    /// set up but no trigger bands (the caller inserts the stored ones).
    fn unindexed(s: Snapshot) -> Result<Engine, EngineError> {
        let mut e = Engine::checked_shell(s)?;
        let mut slots: Vec<(u32, String)> =
            e.s.markets
                .iter()
                .map(|(k, m)| (m.slot, k.clone()))
                .collect();
        slots.sort();
        e.market_by_slot = slots.into_iter().map(|(_, k)| k).collect();
        let feeds: Vec<String> = e.s.feeds.keys().cloned().collect();
        for f in feeds {
            let _slot = e.idx.feed_slot(&f);
        }
        // Accounts in id order: each market's list comes out sorted.
        let mut holders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, a) in &e.s.accounts {
            for m in a.positions.keys() {
                match holders.get_mut(m) {
                    Some(v) => v.push(*id),
                    None => {
                        holders.insert(m.clone(), vec![*id]);
                    }
                }
            }
        }
        e.idx.load_holders(holders);
        Ok(e)
    }
}
