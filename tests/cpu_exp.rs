//! The CPU reference's vectorisable `exp` (`sana::cpu::exp`) against f64's over the whole f32 range: within 2 ulp of
//! the correctly rounded value from −87 up (results are normal f32s there), 0 below (flushed instead of subnormal),
//! infinity where libm's is, NaN for NaN.

#[path = "common/ulp.rs"]
mod ulp;

use sana::cpu::exp::exp;
use ulp::ulps;

#[test]
fn exp_is_within_two_ulp_everywhere() {
    let (mut worst, mut at) = (0.0f64, 0.0f32);
    // Every 997th f32 from −87 (the flush point) to 88.7 (the last finite result), plus the reduction's edges.
    let (lo, hi) = ((-87.0f32).to_bits(), 88.7f32.to_bits());
    let negatives = (0u32.wrapping_add(1u32 << 31)..lo)
        .step_by(997)
        .map(f32::from_bits);
    let positives = (0..hi).step_by(997).map(f32::from_bits);
    let edges = [0.0, -0.0, 0.346_573_6, -0.346_573_6, 1.0, -1.0, 88.0, -87.0];
    for x in negatives.chain(positives).chain(edges) {
        let want = f64::from(x).exp() as f32;
        let e = ulps(exp(x), want);
        if e > worst {
            (worst, at) = (e, x);
        }
    }
    println!("worst: {worst} ulp at {at}");
    assert!(
        worst <= 2.0,
        "exp({at}) is {worst} ulp from the correctly rounded value"
    );
}

#[test]
fn exp_saturates_and_flushes() {
    for x in [-1000.0f32, -104.5, -87.01, f32::NEG_INFINITY] {
        assert_eq!(exp(x), 0.0, "exp({x})");
    }
    for x in [88.73f32, 89.0, 1000.0, f32::INFINITY] {
        assert_eq!(exp(x), f32::INFINITY, "exp({x})");
    }
    assert!(exp(f32::NAN).is_nan());
    assert!(exp(-87.0) >= f32::MIN_POSITIVE, "exp(-87) must stay normal");
}
