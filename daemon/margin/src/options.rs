//! European option pricing: Black-76 (futures/forward-quoted underlyings)
//! and Black-Scholes-Merton (spot-quoted underlyings with a carry yield), with
//! Greeks. Floats live here only; callers round with `fixed::round_to_scale`.

use crate::detmath::{exp, ln, norm_cdf, norm_pdf};
use serde::{Deserialize, Serialize};

/// Call or put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionKind {
    /// Right to buy.
    Call,
    /// Right to sell.
    Put,
}

/// Which model prices an option market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingModel {
    /// Black (1976): the feed quotes a futures/forward price `F`.
    Black76,
    /// Black-Scholes-Merton: the feed quotes a spot price `S` with a
    /// continuous carry yield (dividend or foreign rate), in ppm per year.
    BlackScholes {
        /// Continuous yield q, ppm per year.
        carry_yield_ppm: i64,
    },
}

/// Inputs in natural units (prices as plain numbers, time in years).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionInputs {
    /// Call or put.
    pub kind: OptionKind,
    /// Underlying price: F for Black-76, S for Black-Scholes.
    pub underlying: f64,
    /// Strike.
    pub strike: f64,
    /// Time to expiry in years.
    pub years: f64,
    /// Volatility (0.2 = 20%).
    pub vol: f64,
    /// Continuously compounded risk-free rate.
    pub rate: f64,
    /// Carry yield q (Black-Scholes only; ignored by Black-76).
    pub carry: f64,
}

/// Price and Greeks (Hull's conventions: vega per 1.00 of vol, theta per
/// year, rho per 1.00 of rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Priced {
    /// Premium.
    pub price: f64,
    /// dV/dUnderlying.
    pub delta: f64,
    /// d2V/dUnderlying2.
    pub gamma: f64,
    /// dV/dVol.
    pub vega: f64,
    /// dV/dt (calendar time passing), per year.
    pub theta: f64,
    /// dV/dRate.
    pub rho: f64,
}

/// Prices an option with the given model. At or after expiry (or with zero
/// vol) the value is the discounted intrinsic value.
pub fn price(model: PricingModel, i: &OptionInputs) -> Priced {
    match model {
        PricingModel::Black76 => black76(i),
        PricingModel::BlackScholes { .. } => black_scholes(i),
    }
}

fn intrinsic(i: &OptionInputs) -> Priced {
    let (price, delta) = match i.kind {
        OptionKind::Call => ((i.underlying - i.strike).max(0.0), if i.underlying > i.strike { 1.0 } else { 0.0 }),
        OptionKind::Put => ((i.strike - i.underlying).max(0.0), if i.underlying < i.strike { -1.0 } else { 0.0 }),
    };
    Priced { price, delta, gamma: 0.0, vega: 0.0, theta: 0.0, rho: 0.0 }
}

/// Black-76 on a futures price F.
pub fn black76(i: &OptionInputs) -> Priced {
    if i.years <= 0.0 || i.vol <= 0.0 {
        return intrinsic(i);
    }
    let (f, k, t, v, r) = (i.underlying, i.strike, i.years, i.vol, i.rate);
    let sqrt_t = t.sqrt();
    let d1 = (ln(f / k) + 0.5 * v * v * t) / (v * sqrt_t);
    let d2 = d1 - v * sqrt_t;
    let df = exp(-r * t);
    let pdf1 = norm_pdf(d1);
    let (price, delta) = match i.kind {
        OptionKind::Call => (df * (f * norm_cdf(d1) - k * norm_cdf(d2)), df * norm_cdf(d1)),
        OptionKind::Put => (df * (k * norm_cdf(-d2) - f * norm_cdf(-d1)), -df * norm_cdf(-d1)),
    };
    let gamma = df * pdf1 / (f * v * sqrt_t);
    let vega = df * f * pdf1 * sqrt_t;
    // dV/dt with t = time passing (= -dV/dT): decay plus the discounting term.
    let theta = -df * f * pdf1 * v / (2.0 * sqrt_t) + r * price;
    let rho = -t * price;
    Priced { price, delta, gamma, vega, theta, rho }
}

/// Black-Scholes-Merton on a spot price S with carry yield q.
pub fn black_scholes(i: &OptionInputs) -> Priced {
    if i.years <= 0.0 || i.vol <= 0.0 {
        return intrinsic(i);
    }
    let (s, k, t, v, r, q) = (i.underlying, i.strike, i.years, i.vol, i.rate, i.carry);
    let sqrt_t = t.sqrt();
    let d1 = (ln(s / k) + (r - q + 0.5 * v * v) * t) / (v * sqrt_t);
    let d2 = d1 - v * sqrt_t;
    let dq = exp(-q * t);
    let dr = exp(-r * t);
    let pdf1 = norm_pdf(d1);
    let gamma = dq * pdf1 / (s * v * sqrt_t);
    let vega = s * dq * pdf1 * sqrt_t;
    let decay = -s * dq * pdf1 * v / (2.0 * sqrt_t);
    match i.kind {
        OptionKind::Call => Priced {
            price: s * dq * norm_cdf(d1) - k * dr * norm_cdf(d2),
            delta: dq * norm_cdf(d1),
            gamma,
            vega,
            theta: decay + q * s * dq * norm_cdf(d1) - r * k * dr * norm_cdf(d2),
            rho: k * t * dr * norm_cdf(d2),
        },
        OptionKind::Put => Priced {
            price: k * dr * norm_cdf(-d2) - s * dq * norm_cdf(-d1),
            delta: -dq * norm_cdf(-d1),
            gamma,
            vega,
            theta: decay - q * s * dq * norm_cdf(-d1) + r * k * dr * norm_cdf(-d2),
            rho: -k * t * dr * norm_cdf(-d2),
        },
    }
}
