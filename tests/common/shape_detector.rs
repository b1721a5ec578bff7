//! A transparent judge of the demo model's pictures (models/sana-shapes): which colour, shape and position the
//! largest blob of an image has. No learning, five steps, each threshold chosen from what tools/shapes_dataset.py
//! draws (tools/shape_detector.py is the same detector in Python, used while training: change both together).
//!
//! 1. Background: the per-channel median of the one-pixel border (the shape never touches the border).
//! 2. Foreground: pixels farther than [`FOREGROUND_DISTANCE`] (Euclidean RGB, 0–255 levels) from the background;
//!    every palette colour is at least 120 from every background, so the cut sits halfway, below anti-aliased
//!    edges' noise. The blob is the largest 4-connected component (first found in row order on ties).
//! 3. Colour: the palette colour nearest the blob's mean RGB.
//! 4. Position: the centre of the blob's bounding box, as an offset from the image centre in fractions of the side.
//!    Shapes are drawn at 0.25 from the centre (±0.03 jitter) or at the centre, so within [`CENTRE_RADIUS`] on
//!    both axes is "centre", else the axis with the larger offset decides. The bounding box, not the centroid:
//!    a triangle's centroid sits a third of its height below its box centre.
//! 5. Shape: the fill ratio, blob area / bounding-box area. Drawn shapes measure square 0.98–1, circle 0.70–0.84
//!    (π/4 ideally), triangle 0.50–0.60 (1/2), star 0.32–0.43 (a five-pointed star with inner radius a third of
//!    the outer one); [`FILL_CUTS`] split between those ranges.
#![allow(dead_code)] // the CPU/emu and the cuda test binaries each use their own subset

/// The palette of tools/shapes_dataset.py: caption word and RGB.
pub const COLOURS: [(&str, [u8; 3]); 5] = [
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [240, 210, 40]),
    ("purple", [150, 60, 190]),
];

/// Foreground cut, Euclidean RGB distance from the background in 8-bit levels.
pub const FOREGROUND_DISTANCE: f64 = 60.0;
/// Largest offset of the box centre from the image centre, on both axes, still called "centre".
pub const CENTRE_RADIUS: f64 = 0.12;
/// `(lowest fill ratio, shape)`, highest first.
pub const FILL_CUTS: [(f64, &str); 4] = [
    (0.9, "square"),
    (0.66, "circle"),
    (0.46, "triangle"),
    (0.0, "star"),
];

/// What the detector sees in an image, with the measurements behind it (for failure messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub colour: &'static str,
    pub shape: &'static str,
    pub position: &'static str,
    /// The blob's mean RGB.
    pub mean_rgb: [f64; 3],
    /// Blob area / bounding-box area.
    pub fill: f64,
    /// Bounding-box centre minus image centre, fractions of the side (x right, y down).
    pub offset: (f64, f64),
    /// Blob pixels.
    pub area: usize,
}

/// Judges an RGB8 image (`pixels` row-major, 3 bytes a pixel); `None` when no pixel stands out of the background.
pub fn detect(width: usize, height: usize, pixels: &[u8]) -> Option<Verdict> {
    assert_eq!(pixels.len(), 3 * width * height, "RGB8 pixels");
    let rgb = |i: usize| [0, 1, 2].map(|c| f64::from(pixels[3 * i + c]));
    let background = border_median(width, height, &rgb);
    let mask: Vec<bool> = (0..width * height)
        .map(|i| distance(rgb(i), background) > FOREGROUND_DISTANCE)
        .collect();
    let blob = largest_component(width, height, &mask);
    if blob.is_empty() {
        return None;
    }

    let mut sum = [0.0; 3];
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for &i in &blob {
        let p = rgb(i);
        (0..3).for_each(|c| sum[c] += p[c]);
        let (x, y) = (i % width, i / width);
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let mean_rgb = sum.map(|s| s / blob.len() as f64);
    let colour = COLOURS
        .iter()
        .min_by(|a, b| {
            let da = distance(mean_rgb, a.1.map(f64::from));
            let db = distance(mean_rgb, b.1.map(f64::from));
            da.total_cmp(&db)
        })
        .map(|c| c.0)
        .expect("a palette");

    let dx = (x0 + x1 + 1) as f64 / (2 * width) as f64 - 0.5;
    let dy = (y0 + y1 + 1) as f64 / (2 * height) as f64 - 0.5;
    let position = if dx.abs().max(dy.abs()) < CENTRE_RADIUS {
        "centre"
    } else if dx.abs() >= dy.abs() {
        if dx < 0.0 {
            "left"
        } else {
            "right"
        }
    } else if dy < 0.0 {
        "top"
    } else {
        "bottom"
    };

    let fill = blob.len() as f64 / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
    let shape = FILL_CUTS
        .iter()
        .find(|(cut, _)| fill >= *cut)
        .map(|c| c.1)
        .expect("the last cut is 0");
    Some(Verdict {
        colour,
        shape,
        position,
        mean_rgb,
        fill,
        offset: (dx, dy),
        area: blob.len(),
    })
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt()
}

/// Per-channel median of the border pixels (the mean of the two middle values for an even count, as numpy's).
fn border_median(width: usize, height: usize, rgb: &dyn Fn(usize) -> [f64; 3]) -> [f64; 3] {
    let mut border: Vec<usize> = (0..width)
        .flat_map(|x| [x, (height - 1) * width + x])
        .collect();
    border.extend((0..height).flat_map(|y| [y * width, y * width + width - 1]));
    [0, 1, 2].map(|c| {
        let mut v: Vec<f64> = border.iter().map(|&i| rgb(i)[c]).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    })
}

/// Pixel indices of the largest 4-connected set of `mask` (the first found in row order on ties).
fn largest_component(width: usize, height: usize, mask: &[bool]) -> Vec<usize> {
    let mut seen = vec![false; mask.len()];
    let mut best = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut stack, mut pixels) = (vec![start], Vec::new());
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % width, i / width);
            let neighbours = [
                (y > 0).then(|| i - width),
                (y + 1 < height).then(|| i + width),
                (x > 0).then(|| i - 1),
                (x + 1 < width).then(|| i + 1),
            ];
            for n in neighbours.into_iter().flatten() {
                if mask[n] && !seen[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        if pixels.len() > best.len() {
            best = pixels;
        }
    }
    best
}
