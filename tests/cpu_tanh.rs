//! The CPU reference's vectorisable `tanh` (`sana::cpu::tanh`) against f64's: within 3 ulp of the correctly rounded
//! value over the whole f32 range (the bound tanh.rs derives: exp's 2 ulp damped by e/(e + 1), plus the division's and
//! the subtraction's roundings), odd, ±1 at ±∞, NaN for NaN.

#[path = "common/ulp.rs"]
mod ulp;

use sana::cpu::tanh::tanh;
use ulp::ulps;

#[test]
fn tanh_is_within_three_ulp_everywhere() {
    let (mut worst, mut at) = (0.0f64, 0.0f32);
    // Every 499th positive f32 up to 12 (tanh is 1 in f32 beyond 9.01), the branch point's neighbours, and the
    // smallest values; negatives by oddness, checked below.
    let sweep = (0..12.0f32.to_bits()).step_by(499).map(f32::from_bits);
    let around_branch = (0.549_f32.to_bits()..0.551_f32.to_bits()).map(f32::from_bits);
    let edges = [
        1.0e-30,
        f32::MIN_POSITIVE,
        1.0e-4,
        0.55,
        1.0,
        9.0,
        44.0,
        89.0,
        1.0e30,
        f32::MAX,
    ];
    for x in sweep.chain(around_branch).chain(edges) {
        let want = f64::from(x).tanh() as f32;
        let got = tanh(x);
        let e = ulps(got, want);
        if e > worst {
            (worst, at) = (e, x);
        }
        assert_eq!(
            tanh(-x).to_bits(),
            (-got).to_bits(),
            "tanh(−{x}) is not −tanh({x})"
        );
    }
    println!("worst: {worst} ulp at {at}");
    assert!(
        worst <= 3.0,
        "tanh({at}) is {worst} ulp from the correctly rounded value"
    );
}

#[test]
fn tanh_saturates_and_keeps_nan_and_zero_signs() {
    assert_eq!(tanh(f32::INFINITY), 1.0);
    assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
    assert!(tanh(f32::NAN).is_nan());
    assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
}
