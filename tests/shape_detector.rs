//! The judge of tests/demo_semantic.rs (tests/common/shape_detector.rs) on pictures drawn here, exactly: it must
//! read a plain drawing right before its verdicts on the demo model's pictures mean anything.

#[path = "common/shape_detector.rs"]
mod shape_detector;

use shape_detector::detect;

/// The detector on pictures drawn here, exactly: a red square on the left of white, a blue disc at the bottom of
/// black, a background alone.
#[test]
fn shape_detector_reads_drawn_shapes() {
    let side = 64;
    let paint = |background: [u8; 3], colour: [u8; 3], inside: &dyn Fn(f64, f64) -> bool| {
        let mut pixels = Vec::with_capacity(3 * side * side);
        for y in 0..side {
            for x in 0..side {
                let (fx, fy) = (
                    (x as f64 + 0.5) / side as f64,
                    (y as f64 + 0.5) / side as f64,
                );
                pixels.extend(if inside(fx, fy) { colour } else { background });
            }
        }
        pixels
    };
    let square = paint([245; 3], [220, 40, 40], &|x, y| {
        (x - 0.25).abs() < 0.15 && (y - 0.5).abs() < 0.15
    });
    let v = detect(side, side, &square).unwrap();
    assert_eq!((v.colour, v.shape, v.position), ("red", "square", "left"));
    let disc = paint([20; 3], [40, 80, 220], &|x, y| {
        (x - 0.5).powi(2) + (y - 0.75).powi(2) < 0.15f64.powi(2)
    });
    let v = detect(side, side, &disc).unwrap();
    assert_eq!(
        (v.colour, v.shape, v.position),
        ("blue", "circle", "bottom")
    );
    assert_eq!(
        detect(side, side, &paint([170; 3], [0; 3], &|_, _| false)),
        None
    );
}
