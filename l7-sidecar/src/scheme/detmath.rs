//! `ln`, `exp` and `pow` built only from IEEE-754 `+ - * /`, which are correctly rounded and
//! therefore give bit-identical results everywhere. The platform's libm does not promise that
//! (glibc, musl and macOS differ in the last bit), and a last-bit difference in a score is
//! enough for two sidecars to disagree about the owner of a key. Accurate to about 1e-15
//! relative, which is all the weighted schemes (`rendezvous`, `carp`) need.

use std::f64::consts::{LN_2, SQRT_2};

/// Natural logarithm of a positive, finite, normal `x` (the callers never pass anything else).
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0, "ln({x})");
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa scaled into [1, 2), then folded into [sqrt(2)/2, sqrt(2)] so the series
    // argument stays below 0.172.
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT_2 {
        m /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1).
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    for _ in 0..16 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    exponent as f64 * LN_2 + 2.0 * sum
}

/// e^x for |x| < 700 (the callers stay far inside that).
pub(crate) fn exp(x: f64) -> f64 {
    debug_assert!(x.abs() < 700.0, "exp({x})");
    // x = k ln2 + r with |r| <= ln2/2; e^x = 2^k e^r.
    let k = (x / LN_2).round();
    let r = x - k * LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..24 {
        term *= r / i as f64;
        sum += term;
    }
    let scale = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    sum * scale
}

/// x^y for x >= 0 (0^y = 0 for y > 0, as C's `pow`).
pub(crate) fn pow(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    exp(y * ln(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 4e-15 * b.abs().max(1.0)
    }

    #[test]
    fn agrees_with_libm() {
        for &x in &[
            1e-16, 1e-3, 0.1, 0.5, 0.999_999, 1.0, 1.5, 2.0, 3.0, 10.0, 1e6, 1e18,
        ] {
            assert!(close(ln(x), x.ln()), "ln({x}) = {} vs {}", ln(x), x.ln());
        }
        for &x in &[-40.0, -1.0, -0.3, 0.0, 0.2, 1.0, 5.5, 40.0] {
            assert!(
                close(exp(x), x.exp()),
                "exp({x}) = {} vs {}",
                exp(x),
                x.exp()
            );
        }
        for &(x, y) in &[
            (2.0, 0.5),
            (8.0, 1.0 / 3.0),
            (0.3, 4.0),
            (1.0, 7.0),
            (4.0, 0.25),
        ] {
            assert!(close(pow(x, y), x.powf(y)), "pow({x},{y})");
        }
        assert_eq!(pow(0.0, 3.0), 0.0);
    }
}
