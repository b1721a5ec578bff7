//! An f32 `tanh` the compiler can vectorise: libm's `tanhf` is an opaque call per element, and Gemma-2's attention
//! soft-cap (`c·tanh(s/c)`) takes ~35 million of them per prompt. Within 3 ulp of the exact value over the whole f32
//! range (tests/cpu_tanh.rs).

use crate::cpu::exp::exp;

/// Below this |x| the odd Taylor series is used; above it `1 − 2/(e^{2|x|} + 1)`, whose subtraction loses at most a
/// bit there (the result is above 1/2).
const SERIES_BELOW: f32 = 0.55;

/// `tanh(x)` in f32. For |x| < 0.55, `x + x³·P(x²)` with the series' terms up to x¹⁷ (the first one left out is below
/// 6·10⁻⁹ of the result, a tenth of an ulp); above, from [`exp`] (within 2 ulp), whose error the formula damps by
/// `e/(e + 1)`, plus the division's and subtraction's roundings. Both are computed and one is selected, so a loop
/// over this has no branch. Odd, so NaN stays NaN and ±∞ give ±1.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let series = a + a
        * z
        * (-1.0 / 3.0
            + z * (2.0 / 15.0
                + z * (-17.0 / 315.0
                    + z * (62.0 / 2835.0
                        + z * (-1382.0 / 155_925.0
                            + z * (21_844.0 / 6_081_075.0
                                + z * (-929_569.0 / 638_512_875.0
                                    + z * (6_404_582.0 / 10_854_718_875.0))))))));
    // e^{2a} overflows to ∞ above a ≈ 44, where 2/(∞ + 1) = 0 gives exactly 1.
    let from_exp = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let magnitude = if a < SERIES_BELOW { series } else { from_exp };
    magnitude.copysign(x)
}
