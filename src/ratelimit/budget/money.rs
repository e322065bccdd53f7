//! Money as integers: budgets, costs and spend are counted in micro-dollars (1 USD = 1,000,000), so
//! no float drifts in Redis or across nodes. A backend's price per million tokens in USD is exactly
//! its price per token in micro-dollars.

use crate::config::PriceConfig;

pub const MICROS_PER_USD: f64 = 1_000_000.0;

/// Dollars to micro-dollars, rounded to the nearest (negative and non-finite values count as 0).
pub fn usd_to_micros(usd: f64) -> u64 {
    if !usd.is_finite() || usd <= 0.0 {
        return 0;
    }
    (usd * MICROS_PER_USD).round().min(u64::MAX as f64) as u64
}

/// Micro-dollars to dollars (for headers, metrics and the admin endpoint).
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

/// `1.234567` for micro-dollars: exact, trailing zeros trimmed (`5`, `0.25`).
pub fn usd_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (whole, frac) = (m / 1_000_000, m % 1_000_000);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let f = format!("{frac:06}");
    format!("{sign}{whole}.{}", f.trim_end_matches('0'))
}

/// The cost of `input` + `output` tokens at `price`, in micro-dollars, rounded up (a budget never
/// under-counts a request). Prices are taken to the pico-dollar per token first, so the sum is
/// integer arithmetic.
pub fn cost_micros(price: PriceConfig, input: u64, output: u64) -> u64 {
    let pico = |usd_per_1m: f64| (usd_per_1m.max(0.0) * 1e6).round() as u128;
    let total =
        pico(price.input_per_1m) * input as u128 + pico(price.output_per_1m) * output as u128;
    total.div_ceil(1_000_000).min(u64::MAX as u128) as u64
}

/// The highest input and output prices among `prices`: what an estimate charges when the backend
/// is not chosen yet.
pub fn max_price(prices: impl IntoIterator<Item = PriceConfig>) -> PriceConfig {
    prices.into_iter().fold(
        PriceConfig {
            input_per_1m: 0.0,
            output_per_1m: 0.0,
        },
        |a, p| PriceConfig {
            input_per_1m: a.input_per_1m.max(p.input_per_1m),
            output_per_1m: a.output_per_1m.max(p.output_per_1m),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(i: f64, o: f64) -> PriceConfig {
        PriceConfig {
            input_per_1m: i,
            output_per_1m: o,
        }
    }

    #[test]
    fn dollars_convert_to_whole_micro_dollars() {
        assert_eq!(usd_to_micros(5.0), 5_000_000);
        assert_eq!(
            usd_to_micros(0.1),
            100_000,
            "0.1 is not exact in binary: rounded"
        );
        assert_eq!(usd_to_micros(0.000_000_4), 0);
        assert_eq!(usd_to_micros(0.000_000_6), 1);
        assert_eq!(usd_to_micros(-1.0), 0);
        assert_eq!(usd_to_micros(f64::NAN), 0);
        // Ten thousand additions of a tenth of a cent stay exact.
        let sum: u64 = (0..10_000).map(|_| usd_to_micros(0.001)).sum();
        assert_eq!(sum, 10_000_000);
        assert_eq!(micros_to_usd(2_500_000), 2.5);
        assert_eq!(usd_text(5_000_000), "5");
        assert_eq!(usd_text(250_000), "0.25");
        assert_eq!(usd_text(1_234_567), "1.234567");
        assert_eq!(usd_text(-30), "-0.00003");
    }

    #[test]
    fn costs_are_integer_and_rounded_up() {
        // $3 per 1M input = 3 µ$ per token; $15 per 1M output = 15 µ$ per token.
        assert_eq!(cost_micros(price(3.0, 15.0), 1000, 100), 3000 + 1500);
        // $0.15 per 1M: 10 tokens cost 1.5 µ$, counted as 2.
        assert_eq!(cost_micros(price(0.15, 0.0), 10, 0), 2);
        assert_eq!(cost_micros(price(0.15, 0.6), 0, 0), 0);
        assert_eq!(cost_micros(price(0.0, 0.0), 1_000_000, 1_000_000), 0);
        assert_eq!(
            cost_micros(price(-1.0, 2.0), 5, 5),
            10,
            "a negative price counts as 0"
        );
        let m = max_price([price(1.0, 9.0), price(4.0, 2.0)]);
        assert_eq!((m.input_per_1m, m.output_per_1m), (4.0, 9.0));
    }
}
