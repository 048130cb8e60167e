//! Trigger bands from the unit's actual health curve.
//!
//! A unit's health `H = equity - maintenance` is a sum of one term per feed
//! it depends on (positions on that underlying, collateral priced by it)
//! plus its cash or isolated pool, because requirements are per position
//! (linear) or per underlying (portfolio grid). So `H(p_1, .., p_k, t) =
//! base + sum_f h_f(p_f, t)`. The current margin `M = H - slack` is shared
//! out between the feeds in proportion to their exposure; feed `f` keeps its
//! band while `h_f` loses less than its share, so moves inside every band at
//! once cannot cross maintenance together.
//!
//! Each band is found by Lipschitz stepping: `h_f` moves by at most `L_f`
//! per unit of price (`|delta| <= D` per option contract, `1 + |move|` per
//! perpetual in a scenario, `1 + 2 × rate` for linear requirements), so a
//! probe at price `q` with margin `mu` proves every price within `mu / L_f`
//! of `q`; the next probe goes to the edge of what is proven. Probes are
//! exact: linear terms are evaluated at any integer price with the engine's
//! own arithmetic; options are evaluated on a fixed price grid (multiples
//! of a power of ten about 0.1–1% of the price, coarser by powers of two
//! for far probes) at the start and the end of a 30-minute time window (two
//! 15-minute buckets); a probe takes the worse end and subtracts, per
//! contract, four times the largest change of any value across the window
//! for what time can do in between. The unit is rechecked before its
//! window ends, at a per-unit offset so rechecks spread out.
//! Options within a day of expiry (after the window), and anything that
//! cannot be evaluated, fall back to the whole-band Lipschitz bound.
//!
//! Portfolio parts also have a curvature bound (`option_curvature`): two
//! probes whose margins both cover the most the curve can bend between
//! them prove the whole gap, which reaches much further than the slope
//! bound when the margin is small.

use super::health::max_rate_ppm;
use super::triggers::{Req, delta_bound_ppm, linear_sensitivity_ppm};
use super::*;
use crate::fixed::VALUE_DIVISOR;
use crate::index::IntMap;

/// Length of a grid time bucket. A band computed in bucket `b` holds for
/// prices marked at any time in `[b, b + 2)` buckets and is rechecked
/// before that ends.
pub(super) const BUCKET_MS: u64 = 900_000;
/// Options must live at least this long after the window to use the grid
/// (so their value is smooth in time across it).
const MIN_LIFE_MS: u64 = 86_400_000;
/// Bound on sizes, prices and option values for the probe arithmetic.
const LIM: i128 = 1 << 60;
/// Most next-bucket grid points computed after one report.
const MAX_PREFILL: usize = 64;
/// Probes per band side.
const MAX_PROBES: usize = 8;

/// Option values on the price grid for the current time bucket. A cache of
/// a pure function of the state: it never changes a result, only its cost.
#[derive(Clone, Debug, Default)]
pub(crate) struct GridCache {
    bucket: u64,
    points: IntMap<(u32, i128), GridPoint>,
    /// The same points for the next bucket, filled a few per report ahead
    /// of time so that a bucket change does not cost one burst.
    next: IntMap<(u32, i128), GridPoint>,
    todo: Vec<(u32, i128)>,
    /// When the last prefill ran (ms), to pace the next one.
    prefilled_at: u64,
}

impl GridCache {
    pub(crate) fn clear(&mut self) {
        self.points.clear();
        self.next.clear();
        self.todo.clear();
    }

    fn enter(&mut self, bucket: u64) {
        if bucket == self.bucket {
            return;
        }
        if bucket == self.bucket.wrapping_add(1) {
            self.points = std::mem::take(&mut self.next);
        } else {
            self.points.clear();
            self.next.clear();
        }
        // Everything this bucket starts with is worth having in the next.
        self.todo = self.points.keys().copied().collect();
        self.todo.sort_unstable();
        self.bucket = bucket;
    }
}

#[derive(Clone, Debug)]
struct GridPoint {
    /// Mark then each scenario mark, at the window's start and at its end.
    start: Vec<i128>,
    end: Vec<i128>,
    /// Largest |end - start| over those values.
    drift: i128,
}

#[derive(Clone, Copy)]
enum LegKind<'a> {
    /// Linear requirement (unit without options): perpetual or future.
    Linear(&'a MarketConfig),
    /// Perpetual or future inside a portfolio unit.
    Delta1,
    /// Option inside a portfolio unit: values from the grid.
    Option(&'a str, &'a MarketState),
}

struct Leg<'a> {
    size: i128,
    quote: i128,
    kind: LegKind<'a>,
    /// Current mark then scenario marks.
    now: Vec<i128>,
}

struct Part<'a> {
    fs: &'a FeedState,
    p0: i128,
    /// The feed's EMA at the examination (0: none): collateral counts at
    /// the more conservative of a probe's price and this.
    ema: i128,
    legs: Vec<Leg<'a>>,
    /// Collateral priced by this feed: (quantity, haircut ppm).
    coll: Vec<(i128, i128)>,
    /// Bound on |dh/d ema| (the collateral's share of `sens`).
    coll_sens: i128,
    /// Bound on |dh/dp| as a quantity (money per price unit × VALUE_DIVISOR).
    sens: i128,
    /// Grid step of the option values (1 when the part has no option).
    step: i128,
    /// h_f at the current marks.
    current: i128,
    /// The requirement `h_f` subtracts.
    req: Req,
    /// Portfolio requirement per unit of worst scenario loss (ppm): 1e6
    /// for maintenance, `portfolio_initial_ratio_ppm` for initial.
    ratio: i128,
    /// Curvature bound: `|d²h_f/dq²| <= curv / q` at every price `q > 0`
    /// and every time in the window (0: none known, the part uses the
    /// slope bound alone). See [`option_curvature`].
    curv: f64,
}

/// Grid step for a price: the power of ten about a thousandth of it.
fn grid_step(p: i128) -> i128 {
    let digits = p.max(1).ilog10();
    10i128.pow(digits.saturating_sub(3))
}

fn jitter(key: Key, span: u64) -> u64 {
    let mut z = key
        .account
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from(key.slot));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % span.max(1)
}

fn ovf(_: ()) -> EngineError {
    crate::fixed::overflow("trigger band")
}

fn add_(a: i128, b: i128) -> Result<i128, EngineError> {
    a.checked_add(b).ok_or(()).map_err(ovf)
}

/// What whole-ppm rates can add to a linear requirement between two
/// prices inside a band (notional up to 1.5 times `n`): the size growth is
/// floored and the concentration add-on ceiled to whole ppm, so the rate
/// steps by up to 2 ppm off the smooth rate the slope bound `L` covers, and
/// the requirement by up to 2 ppm of the notional plus its own rounding, at
/// either end. Found by the band-edge property test: a short perpetual
/// with size growth, 48 units below initial at its band's inner edge.
pub(super) fn rate_rounding(n: i128) -> Result<i128, EngineError> {
    let n_max = n.abs().saturating_mul(3) / 2;
    Ok(2 * (2 * (n_max / PPM + 1) + 1))
}

/// Collateral and linear legs of a part at price `q`, with the engine's own
/// arithmetic (cheap: no option values).
fn linear_at(part: &Part<'_>, q: i128) -> Result<i128, EngineError> {
    let mut h = 0i128;
    for (qty, haircut) in &part.coll {
        let v = value(*qty, super::collateral_price(q, part.ema, *qty))?;
        let v = if v > 0 {
            ppm_floor(v, PPM - haircut)?
        } else {
            v
        };
        h = add(h, v, "collateral value")?;
    }
    for leg in &part.legs {
        let LegKind::Linear(c) = leg.kind else {
            continue;
        };
        let v = value(leg.size, q)?;
        h = add(h, add(leg.quote, v, "position value")?, "equity")?;
        let n = v.abs();
        let growth = super::health::size_add_on_ppm(c, n)?;
        let fs = part.fs;
        let leg = |base: u32| -> Result<i128, EngineError> {
            ppm_ceil(n, (fs.scaled_rate_ppm(base) + growth).min(max_rate_ppm(c)))
        };
        let req = match part.req {
            Req::Maintenance => leg(c.maintenance_ppm)?,
            Req::Initial => leg(c.initial_ppm)?,
            Req::ClearCall(b) => {
                let (i, m) = (leg(c.initial_ppm)?, leg(c.maintenance_ppm)?);
                super::triggers::clear_level(i, m, b)
            }
        };
        h = sub(h, req, "requirement")?;
    }
    Ok(h)
}

/// Option and delta-one legs of a portfolio part at price `q`, at the two
/// ends of the window: `vals[i]` holds option leg i's (start, end) mark and
/// scenario marks. Sums are divided once, so the result is within a few
/// units per leg of the engine's per-term rounding (the band slack covers
/// it).
fn portfolio_at(
    part: &Part<'_>,
    scen: &[Scenario],
    q: i128,
    vals: &[Option<(&[i128], &[i128])>],
    buf: &mut Vec<i128>,
) -> Result<(i128, i128), EngineError> {
    // Bounded magnitudes let the inner loops use plain multiplication:
    // sizes, values and prices below 2^60, at most 32 legs, losses below
    // 2^100 before weighting. Anything larger is refused here and the unit
    // falls back to the whole-band bound.
    let n = scen.len();
    if part.legs.len() > 32 || q.abs() >= LIM {
        return Err(crate::fixed::overflow("trigger band"));
    }
    buf.clear();
    buf.resize(2 * n, 0);
    let (mut eq_a, mut eq_b, mut quotes, mut delta_one) = (0i128, 0i128, 0i128, 0i128);
    for (leg, v) in part.legs.iter().zip(vals) {
        quotes = add_(quotes, leg.quote)?;
        let size = leg.size;
        if size.abs() >= LIM {
            return Err(crate::fixed::overflow("trigger band"));
        }
        match (leg.kind, v) {
            (LegKind::Option(..), Some((a, b))) => {
                // Values are below LIM: checked where they are made
                // (`grid_point`, and the current marks in `exact_bands`).
                if a.len() != n + 1 || b.len() != n + 1 {
                    return Err(crate::fixed::overflow("grid"));
                }
                eq_a += size * a[0];
                eq_b += size * b[0];
                let (la, lb) = buf.split_at_mut(n);
                let (a0, b0) = (a[0], b[0]);
                for ((x, y), (l, m)) in a[1..]
                    .iter()
                    .zip(&b[1..])
                    .zip(la.iter_mut().zip(lb.iter_mut()))
                {
                    *l += size * (a0 - x);
                    *m += size * (b0 - y);
                }
            }
            (LegKind::Delta1, _) => delta_one += size,
            _ => return Err(crate::fixed::overflow("grid")),
        }
    }
    if part.legs.is_empty() {
        return Ok((0, 0));
    }
    // Delta-one legs: value size × q, scenario loss -size × q × move (the
    // engine floors the scenario price; the slack covers the difference).
    let x = (delta_one * q).div_euclid(PPM);
    if x.abs() >= 1 << 100
        || scen
            .iter()
            .any(|s| s.move_ppm.unsigned_abs() >= 1 << 24 || s.weight_ppm >= 1 << 24)
    {
        return Err(crate::fixed::overflow("trigger band"));
    }
    eq_a += delta_one * q;
    eq_b += delta_one * q;
    let mut worst = [0i128; 2];
    for (half, w) in worst.iter_mut().enumerate() {
        let mut top = 0i128;
        for (i, s) in scen.iter().enumerate() {
            let l = buf[half * n + i] - x * i128::from(s.move_ppm);
            if l.abs() >= 1 << 100 {
                return Err(crate::fixed::overflow("trigger band"));
            }
            top = top.max(l * i128::from(s.weight_ppm));
        }
        *w = ppm_ceil(
            mul_div_ceil(top, 1, VALUE_DIVISOR * PPM, "scenario loss")?,
            part.ratio,
        )?;
    }
    let ha = add_(quotes, eq_a.div_euclid(VALUE_DIVISOR))? - worst[0];
    let hb = add_(quotes, eq_b.div_euclid(VALUE_DIVISOR))? - worst[1];
    Ok((ha, hb))
}

/// `1 / sqrt(2 pi)`, the standard normal density's peak, rounded up.
const PDF_PEAK: f64 = 0.398_942_280_401_433;

/// Bound `c` on the curvature of one option contract's part of `h_f`:
/// `|d²h/dq²| <= c / q` per unit of size (money per VALUE_DIVISOR of
/// size), at every price `q` and every time in the window.
///
/// Black-76 and Black-Scholes-Merton share `gamma(S) = e^(-yT) pdf(d1) /
/// (S sigma sqrt T) <= D pdf(0) / (S sigma sqrt T)` with `D` the delta
/// bound. The value term has that bound at `S = q`; a scenario value
/// `V((1+m) q, sigma (1+v))` has `(1+m)² gamma((1+m) q)`, so `(1+m)` times
/// the bound at `q` with vol `sigma (1+v)`; a scenario loss `V(q) - V_s(q)`
/// adds both, weighted, and the requirement takes `ratio` times the worst
/// weighted loss. Sigma is the smallest the market can use in the window
/// (a fixed vol, or the smallest point of the surface: slices interpolate
/// linearly in strike and in total variance, which keeps the vol between
/// its neighbours'), T the shortest time to expiry in it. `None` where the
/// bound does not exist (no vol, a scenario at or below zero price or
/// vol).
fn option_curvature(
    ms: &MarketState,
    fs: &FeedState,
    scen: &[Scenario],
    ratio: i128,
    window: (u64, u64),
) -> Option<f64> {
    let MarketKind::Option {
        expiry_ms,
        model,
        vol,
        ..
    } = &ms.config.kind
    else {
        return None;
    };
    let sigma = match vol {
        VolSource::Fixed { vol_ppm } => f64::from(*vol_ppm) / 1e6,
        VolSource::Surface => fs
            .config
            .vol_surface
            .as_ref()?
            .slices
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.vol_ppm))
            .min()
            .map(|v| f64::from(v) / 1e6)?,
    };
    let years = expiry_ms.checked_sub(window.1)? as f64 / YEAR_MS;
    let d = delta_bound_ppm(fs.config.rate_ppm, model, *expiry_ms, window.0)? as f64 / 1e6;
    if !(sigma > 0.0 && years > 0.0) {
        return None;
    }
    let base = d * PDF_PEAK / (sigma * years.sqrt());
    let mut worst = 0.0f64;
    for s in scen {
        let up = 1.0 + f64::from(s.move_ppm) / 1e6;
        let v = 1.0 + f64::from(s.vol_shock_ppm) / 1e6;
        if !(up > 0.0 && v > 0.0) {
            return None;
        }
        worst = worst.max(f64::from(s.weight_ppm) / 1e6 * (1.0 + up / v));
    }
    let c = base * (1.0 + ratio as f64 / 1e6 * worst) / VALUE_DIVISOR as f64;
    // Headroom for the float arithmetic above (a few ulps).
    let c = c * (1.0 + 1e-9);
    c.is_finite().then_some(c)
}

/// Margin a probe at each end of `[a, b]` needs so that the curvature
/// bound proves every price between them: `curv / min(a, b) × (b - a)² / 8`,
/// rounded up (`i128::MAX / 4` when out of range or without a bound:
/// `curv < 0`).
///
/// Why: on `[a, b]` the value terms are above their chords less `c Δ²/8`
/// and each weighted scenario loss below its chord plus as much; the
/// chords' combination `equity - ratio × max(losses)` is concave, so it is
/// least at an end, where it is the probe's own value. Collateral and
/// delta-one legs are concave or linear in the price and need nothing.
fn curvature_need(curv: f64, a: i128, b: i128) -> i128 {
    let lo = a.min(b);
    if curv < 0.0 || lo <= 0 {
        return i128::MAX / 4;
    }
    let d = (b - a).abs() as f64;
    let x = curv * d * d / (8.0 * lo as f64) * (1.0 + 1e-9) + 1.0;
    if x.is_finite() && x < 1e30 {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "x is finite and in 1..1e30, far inside i128"
        )]
        let x = x.ceil() as i128;
        x
    } else {
        i128::MAX / 4
    }
}

/// How far from a probe at `from` with margin `m` a second probe with as
/// much margin proves by curvature (toward `dir`), or 0 without a bound.
fn curvature_span(curv: f64, m: i128, from: i128, dir: i128) -> i128 {
    if curv < 0.0 || m <= 0 || from <= 0 {
        return 0;
    }
    if curv == 0.0 {
        // Concave: any two probes with margin prove what is between.
        return from;
    }
    // Less the unit `curvature_need` rounds up by, and a little for floats.
    let reach = |lo: f64| (8.0 * (m - 1) as f64 * lo / curv).sqrt() * (1.0 - 1e-9);
    let mut d = reach(from as f64);
    if dir < 0 {
        d = reach((from as f64 - d).max(from as f64 / 2.0));
    }
    if d.is_finite() && d < 1e30 {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "d is finite and in 0..1e30, far inside i128"
        )]
        let d = d as i128;
        d
    } else {
        0
    }
}

fn grid_point(
    name: &str,
    ms: &MarketState,
    fs: &FeedState,
    q: i128,
    window: (u64, u64),
) -> Result<GridPoint, EngineError> {
    let a = Engine::mark_at(name, ms, fs, q, window.0)?;
    let b = Engine::mark_at(name, ms, fs, q, window.1)?;
    let mut start = vec![a.price];
    start.extend_from_slice(&a.scenarios);
    let mut end = vec![b.price];
    end.extend_from_slice(&b.scenarios);
    if start.iter().chain(&end).any(|x| x.abs() >= LIM) {
        return Err(crate::fixed::overflow("grid"));
    }
    let drift = start
        .iter()
        .zip(&end)
        .map(|(x, y)| (x - y).abs())
        .max()
        .unwrap_or(0);
    Ok(GridPoint { start, end, drift })
}

impl Engine {
    /// Computes grid points of the next time bucket (those the current
    /// bucket used), at least `min` and otherwise paced to finish them
    /// before the bucket's last quarter, at most [`MAX_PREFILL`] per call.
    /// A bucket uses thousands of points (~7,000 at 100 k accounts with
    /// options); left to the bucket change they cost one burst of tens of
    /// milliseconds. Cost only: results never depend on it.
    pub(super) fn prefill_grid(&mut self, min: usize) {
        let now = self.s.now_ms;
        let mut cache = std::mem::take(&mut self.grid);
        if cache.bucket == now / BUCKET_MS {
            let next = cache.bucket.saturating_add(1);
            let done_by = next.saturating_mul(BUCKET_MS).saturating_sub(BUCKET_MS / 4);
            let since = now.saturating_sub(cache.prefilled_at).max(1);
            let left = done_by.saturating_sub(now).max(since);
            let paced = u64::try_from(cache.todo.len())
                .unwrap_or(u64::MAX)
                .saturating_mul(since)
                .div_ceil(left);
            let budget = usize::try_from(paced)
                .unwrap_or(MAX_PREFILL)
                .clamp(min, MAX_PREFILL);
            cache.prefilled_at = now;
            let window = (
                next.saturating_mul(BUCKET_MS),
                next.saturating_add(2).saturating_mul(BUCKET_MS),
            );
            let mut done = 0;
            while done < budget {
                let Some(k) = cache.todo.pop() else { break };
                if cache.next.contains_key(&k) {
                    continue;
                }
                let Some(name) = self.market_by_slot.get(k.0 as usize) else {
                    continue;
                };
                let Some(ms) = self.s.markets.get(name) else {
                    continue;
                };
                let Some(fs) = self.s.feeds.get(&ms.config.feed) else {
                    continue;
                };
                if let Ok(gp) = grid_point(name, ms, fs, k.1, window) {
                    cache.next.insert(k, gp);
                }
                done += 1;
            }
        }
        self.grid = cache;
    }

    /// Bands from the unit's health curve, or `None` when the unit needs the
    /// whole-band Lipschitz bound instead.
    #[allow(clippy::type_complexity)]
    pub(super) fn exact_bands(
        &self,
        cache: &mut GridCache,
        key: Key,
        unit: &Unit,
        h: &Health,
        req: Req,
    ) -> Result<Option<(Vec<(String, i128, i128)>, Option<u64>)>, EngineError> {
        let Some(acct) = self.acct(key.account) else {
            return Ok(Some((vec![], None)));
        };
        let positions = Self::unit_positions(acct, unit);
        if positions.is_empty() && (acct.cash >= 0 || *unit != Unit::Cross) {
            return Ok(Some((vec![], None)));
        }
        let now = self.s.now_ms;
        let bucket = now / BUCKET_MS;
        let (t_start, t_end) = (
            bucket.saturating_mul(BUCKET_MS),
            bucket.saturating_add(2).saturating_mul(BUCKET_MS),
        );
        let mut parts: BTreeMap<&str, Part<'_>> = BTreeMap::new();
        let mut base = match unit {
            Unit::Cross => acct.cash,
            Unit::Isolated { .. } => positions.first().and_then(|(_, p)| p.isolated).unwrap_or(0),
        };
        let ratio = req.portfolio_ratio_ppm(self.s.risk.portfolio_initial_ratio_ppm);
        let mut slack = 32i128;
        let mut has_option = false;
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let feed = ms.config.feed.as_str();
            let Some(fs) = self.s.feeds.get(feed) else {
                return Ok(None);
            };
            let Some(last) = fs.last.as_ref() else {
                return Ok(None);
            };
            // This leg's curvature per unit of size (options only).
            let mut curv = Some(0.0);
            let (kind, k) = if h.portfolio {
                let (opt_slope, d1_slope) = fs.loss_slopes_ppm();
                match &ms.config.kind {
                    MarketKind::Option {
                        expiry_ms, model, ..
                    } => {
                        if *expiry_ms < t_end.saturating_add(MIN_LIFE_MS) {
                            return Ok(None);
                        }
                        has_option = true;
                        // |delta| <= D = e^(max(0, -r, -q) T); a scenario
                        // loss moves by at most D (1 + m) + D, the
                        // requirement by `ratio` times that loss.
                        let Some(d_ppm) =
                            delta_bound_ppm(fs.config.rate_ppm, model, *expiry_ms, t_start)
                        else {
                            return Ok(None);
                        };
                        let k = PPM + mul_div_ceil(ratio, opt_slope, PPM, "sensitivity")?;
                        curv = option_curvature(ms, fs, &fs.scenarios(), ratio, (t_start, t_end));
                        (
                            LegKind::Option(m.as_str(), ms),
                            mul_div_ceil(d_ppm, k, PPM, "sensitivity")?,
                        )
                    }
                    _ => (
                        LegKind::Delta1,
                        PPM + mul_div_ceil(ratio, d1_slope, PPM, "sensitivity")?,
                    ),
                }
            } else {
                // Rate steps and the size add-on's cap make a linear
                // requirement neither smooth nor convex: slope bound only.
                curv = None;
                (
                    LegKind::Linear(&ms.config),
                    linear_sensitivity_ppm(&ms.config, fs, p.size, mark.price, req)?,
                )
            };
            let part = parts.entry(feed).or_insert_with(|| Part {
                fs,
                p0: last.price,
                ema: last.ema,
                legs: Vec::new(),
                coll: Vec::new(),
                coll_sens: 0,
                sens: 0,
                step: 1,
                current: 0,
                req,
                ratio,
                curv: 0.0,
            });
            part.sens = add(
                part.sens,
                mul_div_ceil(p.size.abs(), k, PPM, "sensitivity")?,
                "sensitivity",
            )?;
            if matches!(kind, LegKind::Option(..)) {
                part.step = grid_step(last.price);
            }
            // A leg without a curvature bound leaves the part without one
            // (negative: none; `curvature_need` then asks the impossible).
            part.curv = match curv {
                Some(c) if part.curv >= 0.0 => part.curv + c * p.size.abs() as f64,
                _ => -1.0,
            };
            let mut now_vals = Vec::with_capacity(mark.scenarios.len() + 1);
            now_vals.push(mark.price);
            now_vals.extend_from_slice(&mark.scenarios);
            if now_vals.iter().any(|x| x.abs() >= LIM) {
                return Ok(None);
            }
            part.legs.push(Leg {
                size: p.size,
                quote: p.quote,
                kind,
                now: now_vals,
            });
            // Rounding of marks, values and requirements between probes.
            slack = add(slack, 16 + 8 * (p.size.abs() / VALUE_DIVISOR + 1), "slack")?;
            if let LegKind::Linear(_) = kind {
                slack = add(slack, rate_rounding(value(p.size, mark.price)?)?, "slack")?;
            }
        }
        if *unit == Unit::Cross {
            for (a, q) in &acct.collateral {
                let Some(c) = self.s.assets.get(a) else {
                    continue;
                };
                let Some(fs) = self.s.feeds.get(&c.feed) else {
                    continue;
                };
                let Some(last) = fs.last.as_ref() else {
                    continue;
                };
                let part = parts.entry(c.feed.as_str()).or_insert_with(|| Part {
                    fs,
                    p0: last.price,
                    ema: last.ema,
                    legs: Vec::new(),
                    coll: Vec::new(),
                    coll_sens: 0,
                    sens: 0,
                    step: 1,
                    current: 0,
                    req,
                    ratio,
                    curv: 0.0,
                });
                let haircut = i128::from(c.haircut_ppm);
                let s = ppm_ceil(q.abs(), PPM - haircut)?;
                part.sens = add(part.sens, s, "sensitivity")?;
                part.coll_sens = add(part.coll_sens, s, "sensitivity")?;
                part.coll.push((*q, haircut));
                slack = add(slack, 4, "slack")?;
            }
        }
        if parts.is_empty() {
            return Ok(Some((vec![], None)));
        }
        // The parts must add up to the engine's own health (up to the
        // rounding the slack covers).
        // Each part's scenarios, in the parts' order.
        let mut scens: Vec<Vec<Scenario>> = Vec::with_capacity(parts.len());
        let mut buf = Vec::new();
        for part in parts.values_mut() {
            let scen = part.fs.scenarios();
            part.current = linear_at(part, part.p0)?;
            if h.portfolio {
                let vals: Vec<Option<(&[i128], &[i128])>> = part
                    .legs
                    .iter()
                    .map(|l| Some((l.now.as_slice(), l.now.as_slice())))
                    .collect();
                let (c, _) = portfolio_at(part, &scen, part.p0, &vals, &mut buf)?;
                part.current = add(part.current, c, "health")?;
            }
            base = add(base, part.current, "health")?;
            scens.push(scen);
        }
        let h0 = sub(h.equity, req.of(h), "health")?;
        if (base - h0).abs() > slack / 4 {
            return Ok(None);
        }
        let sign: i128 = if h0 >= 0 { 1 } else { -1 };
        let margin = sign * h0 - i128::from(sign < 0) - slack;
        let mut exposure = 0i128;
        let mut exposures = Vec::with_capacity(parts.len());
        for part in parts.values() {
            let e = value(part.sens, part.p0)?.max(0);
            exposure = add(exposure, e, "exposure")?;
            exposures.push(e);
        }
        cache.enter(bucket);
        let n = parts.len() as i128;
        let mut bands = Vec::with_capacity(parts.len());
        for (((f, part), e), scen) in parts.iter().zip(exposures).zip(&scens) {
            let p0 = part.p0;
            let ema_slot = (part.coll_sens > 0).then(|| super::ema_slot(f));
            if margin < 0 {
                bands.push((f.to_string(), p0, p0));
                if let Some(slot) = ema_slot {
                    bands.push((slot, part.ema.max(0), part.ema.max(0)));
                }
                continue;
            }
            let mut share = if exposure > 0 {
                mul_div_floor(margin, e, exposure, "band share")?
            } else {
                margin / n
            };
            // Collateral counts at min/max(price, EMA): an EMA move
            // changes h_f by at most coll_sens per unit, price fixed. A
            // sixteenth of the share is kept for it (an hour-long EMA moves
            // slowly), as a band on the feed's EMA slot; the price probes
            // below get the rest. Without an EMA (value 0) any EMA that
            // appears brings the unit back.
            if let Some(slot) = ema_slot {
                let reserve = share / 16;
                share -= reserve;
                let e0 = part.ema.max(0);
                if e0 == 0 {
                    bands.push((slot, -1, 1));
                } else {
                    let half = mul_div_floor(reserve, VALUE_DIVISOR, part.coll_sens, "band reach")?
                        .min(e0 / 2);
                    bands.push((slot, e0 - half - 1, e0 + half + 1));
                }
            }
            // mu(q): what is left of the share at price q in the worst case
            // over the window.
            let floor_at = sign * part.current - share;
            let mut mu = |q: i128| -> Result<i128, EngineError> {
                let worst = Self::worst_at(
                    cache,
                    &mut buf,
                    part,
                    scen,
                    q,
                    h.portfolio,
                    sign,
                    (t_start, t_end),
                )?;
                sub(worst, floor_at, "band margin")
            };
            let reach = |m: i128| -> Result<i128, EngineError> {
                if part.sens == 0 {
                    Ok(p0)
                } else {
                    mul_div_floor(m, VALUE_DIVISOR, part.sens, "band reach")
                }
            };
            let cap = p0 / 2;
            let step = part.step.max(1);
            // Probes snap toward p0 to multiples of the grid step times a
            // power of two, at most a quarter of the reach being proven:
            // each step keeps most of its progress, and units share (and
            // ticks reuse) the option values of far probes.
            let gran = |r: i128| -> i128 {
                if step == 1 {
                    return 1;
                }
                let mut g = step;
                while g.saturating_mul(8) <= r {
                    g *= 2;
                }
                g
            };
            let snap = |x: i128, g: i128, dir: i128| -> i128 {
                if dir > 0 {
                    x - x.rem_euclid(g)
                } else {
                    x + (g - x.rem_euclid(g)) % g
                }
            };
            let est = reach(share)?;
            let mut edges = [p0; 2];
            let mut proven = true;
            for (e, dir) in edges.iter_mut().zip([1i128, -1]) {
                // First probe: the grid point at or behind p0 must prove p0.
                let mut g = gran(est);
                let (mut last, mut edge, mut m_last) = loop {
                    let q = snap(p0, g, dir);
                    let m = mu(q)?;
                    if m >= 0 {
                        let edge = q.saturating_add(dir * reach(m)?);
                        if dir * (edge - p0) >= 0 {
                            break (q, edge, m);
                        }
                    }
                    if g == step {
                        proven = false;
                        break (p0, p0, 0);
                    }
                    g = step;
                };
                if !proven {
                    break;
                }
                // Curvature proofs: only for a lower bound on `h_f` (the
                // chords' combination is concave, so it bounds from below).
                let curv = if sign > 0 { part.curv } else { -1.0 };
                let further = |a: i128, b: i128| if dir * (a - b) > 0 { a } else { b };
                // Quarter of the margin the next curvature span assumes
                // (halves the span) after a span that did not hold.
                let mut shrink = 0u32;
                for _ in 0..MAX_PROBES {
                    if dir * (edge - p0) >= cap {
                        break;
                    }
                    // Ahead: a probe past the edge, about the last probe's
                    // reach beyond it. |dh/dp| <= L holds on both sides
                    // of a probe, so a probe with margin m proves every
                    // price within m / L of it, behind as well as ahead:
                    // when that reaches back to the edge, the proven range
                    // grows by twice the reach (the margin is mostly flat
                    // and L several times the real slope, so this is the
                    // usual case). A reach shorter than the grid step
                    // tries the next grid point instead of stalling.
                    let r = reach(m_last)?;
                    let mut lipschitz = snap(edge.saturating_add(dir * r), gran(r.max(1)), dir);
                    if dir * (lipschitz - edge) <= 0 {
                        lipschitz = snap(edge, step, dir).saturating_add(dir * step);
                    }
                    // Curvature: two probes whose margins both cover the
                    // curvature over the gap prove the gap (`curvature_need`),
                    // which reaches with the square root of the margin
                    // where the slope bound reaches linearly. The probe
                    // goes to the further of the two.
                    let span = curvature_span(curv, m_last >> (2 * shrink), last, dir);
                    let ahead = if span > 0 {
                        let t = last.saturating_add(dir * span);
                        let t = if dir > 0 {
                            t.min(p0 + cap)
                        } else {
                            t.max(p0 - cap)
                        };
                        further(snap(t, gran((t - last).abs().max(1)), dir), lipschitz)
                    } else {
                        lipschitz
                    };
                    let m = mu(ahead)?;
                    if m >= 0 {
                        let back = reach(m)?;
                        let by_curvature = m.min(m_last) >= curvature_need(curv, last, ahead);
                        if by_curvature || dir * (ahead.saturating_sub(dir * back) - edge) <= 0 {
                            edge = further(ahead.saturating_add(dir * back), edge);
                            last = ahead;
                            m_last = m;
                            shrink = 0;
                            continue;
                        }
                    }
                    // A curvature span that did not hold: try half as far.
                    if ahead != lipschitz && shrink < 4 {
                        shrink += 1;
                        continue;
                    }
                    // Otherwise the probe at the edge, snapped back to the
                    // grid: it proves forward from inside the proven range.
                    let q = snap(edge, gran((edge - last).abs()), dir);
                    if dir * (q - last) <= 0 {
                        break;
                    }
                    let m = mu(q)?;
                    if m < 0 {
                        break;
                    }
                    let next = q.saturating_add(dir * reach(m)?);
                    if dir * (next - edge) > 0 {
                        edge = next;
                    }
                    last = q;
                    m_last = m;
                }
                *e = edge;
            }
            let [hi, lo] = edges;
            if !proven || hi < p0 || lo > p0 {
                bands.push((f.to_string(), p0, p0));
            } else {
                let hi = hi.min(p0 + cap);
                let lo = lo.max(p0 - cap).max(1);
                bands.push((f.to_string(), lo - 1, hi + 1));
            }
        }
        // Anywhere in the second bucket of the window, per unit: rechecks
        // of units examined together spread over a whole bucket.
        let recheck = has_option.then(|| {
            bucket
                .saturating_add(1)
                .saturating_mul(BUCKET_MS)
                .saturating_add(jitter(key, BUCKET_MS))
                .max(now.saturating_add(1))
        });
        Ok(Some((bands, recheck)))
    }

    /// Worst case (for the side `sign` keeps) of `sign × h_f` at price `q`
    /// over the window, less what time can do between its ends.
    #[allow(clippy::too_many_arguments)]
    fn worst_at(
        cache: &mut GridCache,
        buf: &mut Vec<i128>,
        part: &Part<'_>,
        scen: &[Scenario],
        q: i128,
        portfolio: bool,
        sign: i128,
        window: (u64, u64),
    ) -> Result<i128, EngineError> {
        if q <= 0 {
            return Ok(i128::MIN / 4);
        }
        let lin = sign * linear_at(part, q)?;
        if !portfolio {
            return Ok(lin);
        }
        let mut drift = 0i128;
        for leg in &part.legs {
            if let LegKind::Option(name, ms) = leg.kind
                && let std::collections::hash_map::Entry::Vacant(slot) =
                    cache.points.entry((ms.slot, q))
            {
                slot.insert(grid_point(name, ms, part.fs, q, window)?);
                // Used in this bucket: likely used in the next one too.
                cache.todo.push((ms.slot, q));
            }
        }
        let mut vals: Vec<Option<(&[i128], &[i128])>> = Vec::with_capacity(part.legs.len());
        for leg in &part.legs {
            match leg.kind {
                LegKind::Option(_, ms) => {
                    let gp = cache
                        .points
                        .get(&(ms.slot, q))
                        .ok_or_else(|| crate::fixed::overflow("grid"))?;
                    // Time between the window's ends: twice the largest
                    // change of any value, on the equity and on the loss.
                    drift = add(
                        drift,
                        mul_div_ceil(leg.size.abs(), 4 * gp.drift, VALUE_DIVISOR, "drift")?,
                        "drift",
                    )?;
                    vals.push(Some((gp.start.as_slice(), gp.end.as_slice())));
                }
                _ => vals.push(None),
            }
        }
        let (a, b) = portfolio_at(part, scen, q, &vals, buf)?;
        let worst = (sign * a).min(sign * b);
        sub(add(lin, worst, "band margin")?, drift, "band margin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{OptionInputs, OptionKind, PricingModel, price};

    /// The gamma bound the curvature proof rests on, against the pricing
    /// function's own second differences: `V((1+m) S, sigma (1+v))` bends
    /// by at most `(1+m) D pdf(0) / (S sigma (1+v) sqrt T)` per unit of
    /// `S²`, for both models, calls and puts, negative and positive rates
    /// and carries, short and long expiries, low and high vols, and the
    /// grid's extreme moves.
    #[test]
    fn option_values_bend_less_than_the_gamma_bound() {
        let mut checked = 0;
        let mut tightest = 0.0f64;
        for model in [
            PricingModel::Black76,
            PricingModel::BlackScholes {
                carry_yield_ppm: -50_000,
            },
            PricingModel::BlackScholes {
                carry_yield_ppm: 30_000,
            },
        ] {
            for rate in [-0.02f64, 0.0, 0.05] {
                for kind in [OptionKind::Call, OptionKind::Put] {
                    for years in [1.0 / 365.0, 7.0 / 365.0, 0.25, 2.0] {
                        for sigma in [0.05, 0.6, 1.5] {
                            for (m, v) in [(0.0, 0.0), (-0.66, -0.25), (0.16, 0.25), (5.0, 0.0)] {
                                let carry = match model {
                                    PricingModel::BlackScholes { carry_yield_ppm } => {
                                        carry_yield_ppm as f64 / 1e6
                                    }
                                    PricingModel::Black76 => 0.0,
                                };
                                let d = crate::detmath::exp((-rate).max(-carry).max(0.0) * years);
                                let value = |s: f64| {
                                    price(
                                        model,
                                        &OptionInputs {
                                            kind,
                                            underlying: (1.0 + m) * s,
                                            strike: 100.0,
                                            years,
                                            vol: sigma * (1.0 + v),
                                            rate,
                                            carry,
                                        },
                                    )
                                    .price
                                };
                                for i in 0..200 {
                                    let s = 20.0 * 1.02f64.powi(i);
                                    let h = s * 1e-4;
                                    let bend =
                                        (value(s + h) - 2.0 * value(s) + value(s - h)) / (h * h);
                                    let bound = (1.0 + m) * d * PDF_PEAK
                                        / (s * sigma * (1.0 + v) * years.sqrt());
                                    // Float noise of the second difference.
                                    let noise = 1e-13 * value(s).abs().max(1.0) / (h * h);
                                    assert!(
                                        bend <= bound + noise,
                                        "{model:?} {kind:?} r={rate} T={years} sigma={sigma} \
                                         m={m} v={v} S={s}: bends {bend} > bound {bound}"
                                    );
                                    tightest = tightest.max(bend / bound);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 2 * 4 * 3 * 4 * 200);
        // The bound is reached near the money (it is the peak of gamma),
        // so a bound several times too loose would show here.
        assert!(tightest > 0.9, "tightest ratio {tightest}");
    }

    #[test]
    fn curvature_need_and_span_agree() {
        // Concave parts (curv 0) need only the rounding unit; parts
        // without a bound can never be proven by curvature.
        assert_eq!(curvature_need(0.0, 100, 200), 1);
        assert_eq!(curvature_need(-1.0, 100, 200), i128::MAX / 4);
        assert_eq!(curvature_span(-1.0, 1_000, 100, 1), 0);
        // A span from a margin needs about that margin at both ends.
        let (curv, m, from) = (3.5e3, 1_000_000i128, 10_000_000_000i128);
        for dir in [1i128, -1] {
            let d = curvature_span(curv, m, from, dir);
            assert!(d > 0);
            let need = curvature_need(curv, from, from + dir * d);
            assert!(need <= m && need > m * 9 / 10, "{dir}: {need} vs {m}");
        }
    }
}
