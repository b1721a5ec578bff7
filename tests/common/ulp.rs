//! Distance in units in the last place, for the tests of the CPU reference's elementary functions.

/// Distance in units in the last place of `want` (an f32 rounding of the exact value).
pub fn ulps(got: f32, want: f32) -> f64 {
    let ulp = f64::from(want.abs()) * f64::from(f32::EPSILON);
    (f64::from(got) - f64::from(want)).abs()
        / ulp.max(f64::from(f32::MIN_POSITIVE) * f64::from(f32::EPSILON))
}
