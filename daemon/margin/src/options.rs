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
    /// Carry yield q for `black_scholes` called directly; `price` takes q
    /// from `PricingModel::BlackScholes { carry_yield_ppm }` instead, and
    /// Black-76 ignores it.
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

/// Prices an option with the given model; Black-Scholes takes its carry
/// yield from the model (`carry_yield_ppm`), not from `i.carry`.
///
/// Edge cases (no NaN for any finite input): at or after expiry the value
/// is the intrinsic value; with zero vol, a zero underlying or a zero strike
/// before expiry it is the discounted intrinsic value of the forward
/// (`max(S e^{-qT} - K e^{-rT}, 0)` for a call), with the matching
/// delta, theta and rho and zero gamma and vega.
pub fn price(model: PricingModel, i: &OptionInputs) -> Priced {
    match model {
        PricingModel::Black76 => black76(i),
        PricingModel::BlackScholes { carry_yield_ppm } => black_scholes(&OptionInputs {
            carry: carry_yield_ppm as f64 / 1e6,
            ..*i
        }),
    }
}

/// Whether the lognormal formulas apply (their logs and divisions are
/// finite): positive time, vol, underlying and strike.
fn lognormal(i: &OptionInputs) -> bool {
    i.years > 0.0 && i.vol > 0.0 && i.underlying > 0.0 && i.strike > 0.0
}

/// The value without uncertainty before expiry: the payoff on the forward,
/// discounted. Black-Scholes discounts the spot by e^{-qT} and the strike by
/// e^{-rT}; Black-76 discounts the whole payoff `F - K` by e^{-rT}.
fn deterministic(i: &OptionInputs, black76: bool) -> Priced {
    let (s, k, t, r, q) = (
        i.underlying.max(0.0),
        i.strike.max(0.0),
        i.years,
        i.rate,
        i.carry,
    );
    let dr = exp(-r * t);
    let dq = if black76 { dr } else { exp(-q * t) };
    let forward_gain = s * dq - k * dr;
    let (in_money, sign) = match i.kind {
        OptionKind::Call => (forward_gain > 0.0, 1.0),
        OptionKind::Put => (forward_gain < 0.0, -1.0),
    };
    if !in_money {
        return Priced {
            price: 0.0,
            delta: 0.0,
            gamma: 0.0,
            vega: 0.0,
            theta: 0.0,
            rho: 0.0,
        };
    }
    let price = sign * forward_gain;
    // theta = dV/dt with t = time passing (= -dV/dT).
    let (theta, rho) = if black76 {
        (r * price, -t * price)
    } else {
        (sign * (q * s * dq - r * k * dr), sign * k * t * dr)
    };
    Priced {
        price,
        delta: sign * dq,
        gamma: 0.0,
        vega: 0.0,
        theta,
        rho,
    }
}

fn intrinsic(i: &OptionInputs) -> Priced {
    let (price, delta) = match i.kind {
        OptionKind::Call => (
            (i.underlying - i.strike).max(0.0),
            if i.underlying > i.strike { 1.0 } else { 0.0 },
        ),
        OptionKind::Put => (
            (i.strike - i.underlying).max(0.0),
            if i.underlying < i.strike { -1.0 } else { 0.0 },
        ),
    };
    Priced {
        price,
        delta,
        gamma: 0.0,
        vega: 0.0,
        theta: 0.0,
        rho: 0.0,
    }
}

/// Black-76 on a futures price F.
pub fn black76(i: &OptionInputs) -> Priced {
    if i.years <= 0.0 {
        return intrinsic(i);
    }
    if !lognormal(i) {
        return deterministic(i, true);
    }
    let (f, k, t, v, r) = (i.underlying, i.strike, i.years, i.vol, i.rate);
    let sqrt_t = t.sqrt();
    let d1 = (ln(f / k) + 0.5 * v * v * t) / (v * sqrt_t);
    let d2 = d1 - v * sqrt_t;
    let df = exp(-r * t);
    let pdf1 = norm_pdf(d1);
    let (price, delta) = match i.kind {
        OptionKind::Call => (
            df * (f * norm_cdf(d1) - k * norm_cdf(d2)),
            df * norm_cdf(d1),
        ),
        OptionKind::Put => (
            df * (k * norm_cdf(-d2) - f * norm_cdf(-d1)),
            -df * norm_cdf(-d1),
        ),
    };
    let gamma = df * pdf1 / (f * v * sqrt_t);
    let vega = df * f * pdf1 * sqrt_t;
    // dV/dt with t = time passing (= -dV/dT): decay plus the discounting term.
    let theta = -df * f * pdf1 * v / (2.0 * sqrt_t) + r * price;
    let rho = -t * price;
    Priced {
        price,
        delta,
        gamma,
        vega,
        theta,
        rho,
    }
}

/// Black-Scholes-Merton on a spot price S with carry yield q.
pub fn black_scholes(i: &OptionInputs) -> Priced {
    if i.years <= 0.0 {
        return intrinsic(i);
    }
    if !lognormal(i) {
        return deterministic(i, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(kind: OptionKind, s: f64, k: f64, t: f64, v: f64, r: f64, q: f64) -> OptionInputs {
        OptionInputs {
            kind,
            underlying: s,
            strike: k,
            years: t,
            vol: v,
            rate: r,
            carry: q,
        }
    }

    fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
        assert!(
            (got - want).abs() <= tol,
            "{what}: got {got}, want {want} ± {tol}"
        );
    }

    /// Hull, Options, Futures and Other Derivatives, Example 15.6 (8th ed.):
    /// S = 42, K = 40, r = 10%, sigma = 20%, T = 0.5: c = 4.76, p = 0.81.
    #[test]
    fn hull_black_scholes_example() {
        let c = black_scholes(&inputs(OptionKind::Call, 42.0, 40.0, 0.5, 0.2, 0.1, 0.0));
        let p = black_scholes(&inputs(OptionKind::Put, 42.0, 40.0, 0.5, 0.2, 0.1, 0.0));
        assert_close(c.price, 4.76, 0.005, "call");
        assert_close(p.price, 0.81, 0.005, "put");
        // Put-call parity: c - p = S - K e^{-rT}.
        assert_close(
            c.price - p.price,
            42.0 - 40.0 * (-0.05f64).exp(),
            1e-12,
            "parity",
        );
    }

    /// Hull, Chapter 19 (Greek letters) running example: S = 49, K = 50,
    /// r = 5%, sigma = 20%, T = 20 weeks (0.3846 years). Hull quotes the call
    /// at 2.40, delta 0.522, gamma 0.066, vega 12.1 (per 1.00 of vol), theta
    /// -4.31 per year, rho 8.91 (per 1.00 of rate).
    #[test]
    fn hull_greeks_example() {
        let g = black_scholes(&inputs(
            OptionKind::Call,
            49.0,
            50.0,
            0.3846,
            0.2,
            0.05,
            0.0,
        ));
        assert_close(g.price, 2.40, 0.005, "price");
        assert_close(g.delta, 0.522, 0.0005, "delta");
        assert_close(g.gamma, 0.066, 0.0005, "gamma");
        assert_close(g.vega, 12.1, 0.05, "vega");
        assert_close(g.theta, -4.31, 0.005, "theta");
        assert_close(g.rho, 8.91, 0.005, "rho");
    }

    /// Hull, Example 18.8 (Black's model): European put futures option,
    /// F = K = 20, r = 9%, sigma = 25%, T = 4 months: p = 1.12.
    #[test]
    fn hull_black76_example() {
        let p = black76(&inputs(
            OptionKind::Put,
            20.0,
            20.0,
            4.0 / 12.0,
            0.25,
            0.09,
            0.0,
        ));
        assert_close(p.price, 1.12, 0.005, "put");
        let c = black76(&inputs(
            OptionKind::Call,
            20.0,
            20.0,
            4.0 / 12.0,
            0.25,
            0.09,
            0.0,
        ));
        // At the money forward: call = put.
        assert_close(c.price, p.price, 1e-12, "atm parity");
        assert_close(c.delta - p.delta, (-0.03f64).exp(), 1e-12, "delta parity");
    }

    /// Greeks agree with finite differences of the price (both models).
    #[test]
    fn greeks_match_finite_differences() {
        for model in [
            PricingModel::Black76,
            PricingModel::BlackScholes {
                carry_yield_ppm: 20_000,
            },
        ] {
            for kind in [OptionKind::Call, OptionKind::Put] {
                let base = inputs(kind, 100.0, 95.0, 0.75, 0.35, 0.04, 0.02);
                let b = if matches!(model, PricingModel::Black76) {
                    OptionInputs { carry: 0.0, ..base }
                } else {
                    base
                };
                let g = price(model, &b);
                let h = 1e-4;
                let at = |f: &dyn Fn(&mut OptionInputs)| {
                    let mut x = b;
                    f(&mut x);
                    price(model, &x).price
                };
                let up = at(&|x| x.underlying += h);
                let dn = at(&|x| x.underlying -= h);
                assert_close(g.delta, (up - dn) / (2.0 * h), 1e-6, "delta");
                assert_close(g.gamma, (up - 2.0 * g.price + dn) / (h * h), 1e-3, "gamma");
                let vega = (at(&|x| x.vol += h) - at(&|x| x.vol -= h)) / (2.0 * h);
                assert_close(g.vega, vega, 1e-5, "vega");
                let rho = (at(&|x| x.rate += h) - at(&|x| x.rate -= h)) / (2.0 * h);
                assert_close(g.rho, rho, 1e-5, "rho");
                let theta = -(at(&|x| x.years += h) - at(&|x| x.years -= h)) / (2.0 * h);
                assert_close(g.theta, theta, 1e-4, "theta");
            }
        }
    }

    /// `price` takes Black-Scholes' carry from the model, not from
    /// `inputs.carry` (which a direct caller may leave at 0). Hull, Example
    /// 17.1: S = 930, K = 900, r = 8%, q = 3%, sigma = 20%, T = 2 months:
    /// c = 51.83.
    #[test]
    fn black_scholes_carry_comes_from_the_model() {
        let model = PricingModel::BlackScholes {
            carry_yield_ppm: 30_000,
        };
        let i = inputs(OptionKind::Call, 930.0, 900.0, 2.0 / 12.0, 0.2, 0.08, 0.0);
        assert_close(price(model, &i).price, 51.83, 0.005, "call with q = 3%");
        // The same inputs with carry set agree exactly.
        let with = OptionInputs { carry: 0.03, ..i };
        assert_eq!(price(model, &i), black_scholes(&with));
        // A textbook put: the carry matters (no carry would be 24% off
        // at q = 10%).
        let model = PricingModel::BlackScholes {
            carry_yield_ppm: 100_000,
        };
        let p = inputs(OptionKind::Put, 100.0, 100.0, 1.0, 0.2, 0.05, 0.0);
        let with_q = black_scholes(&OptionInputs { carry: 0.1, ..p });
        assert_eq!(price(model, &p), with_q);
        assert!((with_q.price - black_scholes(&p).price).abs() > 1.0);
    }

    /// With zero vol the value is the discounted intrinsic value of the
    /// forward: r = 10%, T = 0.5: call S = 42, K = 40: 42 - 40 e^{-0.05} =
    /// 3.951; put S = 40, K = 42: 42 e^{-0.05} - 40 < 0, so 0.
    #[test]
    fn zero_vol_is_discounted_forward_intrinsic() {
        let bs = PricingModel::BlackScholes { carry_yield_ppm: 0 };
        let c = price(
            bs,
            &inputs(OptionKind::Call, 42.0, 40.0, 0.5, 0.0, 0.1, 0.0),
        );
        assert_close(c.price, 42.0 - 40.0 * (-0.05f64).exp(), 1e-12, "call");
        assert_close(c.price, 3.95, 0.005, "call");
        assert_eq!(c.delta, 1.0);
        let p = price(bs, &inputs(OptionKind::Put, 40.0, 42.0, 0.5, 0.0, 0.1, 0.0));
        assert_eq!(p.price, 0.0);
        assert_eq!(p.delta, 0.0);
        // Black-76: the payoff on the forward, discounted.
        let c = price(
            PricingModel::Black76,
            &inputs(OptionKind::Call, 42.0, 40.0, 0.5, 0.0, 0.1, 0.0),
        );
        assert_close(c.price, 2.0 * (-0.05f64).exp(), 1e-12, "black-76 call");
        // Tiny vol converges to the same values (the limit is continuous).
        for model in [bs, PricingModel::Black76] {
            for (kind, s, k) in [
                (OptionKind::Call, 42.0, 40.0),
                (OptionKind::Put, 38.0, 42.0),
            ] {
                let zero = price(model, &inputs(kind, s, k, 0.5, 0.0, 0.1, 0.0));
                let tiny = price(model, &inputs(kind, s, k, 0.5, 1e-6, 0.1, 0.0));
                assert_close(zero.price, tiny.price, 1e-9, "price limit");
                assert_close(zero.delta, tiny.delta, 1e-9, "delta limit");
                assert_close(zero.theta, tiny.theta, 1e-6, "theta limit");
                assert_close(zero.rho, tiny.rho, 1e-6, "rho limit");
            }
        }
    }

    /// A zero underlying (or strike) gives finite values, never NaN: a call
    /// on nothing is worth nothing, a put is worth its discounted strike.
    #[test]
    fn zero_underlying_is_finite() {
        for model in [
            PricingModel::Black76,
            PricingModel::BlackScholes {
                carry_yield_ppm: 20_000,
            },
        ] {
            let c = price(
                model,
                &inputs(OptionKind::Call, 0.0, 40.0, 0.5, 0.3, 0.1, 0.0),
            );
            let p = price(
                model,
                &inputs(OptionKind::Put, 0.0, 40.0, 0.5, 0.3, 0.1, 0.0),
            );
            for g in [c, p] {
                for x in [g.price, g.delta, g.gamma, g.vega, g.theta, g.rho] {
                    assert!(x.is_finite(), "{model:?}: {g:?}");
                }
            }
            assert_eq!(c.price, 0.0);
            assert_close(p.price, 40.0 * (-0.05f64).exp(), 1e-12, "put on zero");
            // A zero strike call is the discounted underlying.
            let z = price(
                model,
                &inputs(OptionKind::Call, 50.0, 0.0, 0.5, 0.3, 0.1, 0.0),
            );
            assert!(z.price > 45.0 && z.price <= 50.0, "{z:?}");
        }
    }

    #[test]
    fn expired_is_intrinsic() {
        let c = black76(&inputs(OptionKind::Call, 120.0, 100.0, 0.0, 0.5, 0.05, 0.0));
        assert_eq!(c.price, 20.0);
        assert_eq!(c.delta, 1.0);
        let p = black76(&inputs(OptionKind::Put, 120.0, 100.0, -1.0, 0.5, 0.05, 0.0));
        assert_eq!(p.price, 0.0);
    }
}
