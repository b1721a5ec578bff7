//! The semantic test of the demo model (models/sana-shapes): prompts naming every colour × shape × position, the
//! pictures an engine draws for them, and the share of each attribute tests/common/shape_detector.rs sees right.
#![allow(dead_code)] // the CPU/emu and the cuda test binaries each use their own subset

use std::path::{Path, PathBuf};

use sana::engine::Engine;
use sana::pipeline::Pipeline;
use sana::{Control, Image, Request};

use crate::shape_detector::{detect, COLOURS};

/// The demo model: models/sana-shapes, or `$SANA_MODELS/sana-shapes` where the test executables run away from the
/// source tree (the GPU bundle).
pub fn demo_model() -> PathBuf {
    match std::env::var_os("SANA_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
    }
    .join("sana-shapes")
}

/// The side the demo model was trained at (its transformer's sample_size × the VAE's factor 8).
pub const SIDE: usize = 64;

pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "star"];
/// Position word and the caption's phrase for it (tools/shapes_dataset.py).
pub const POSITIONS: [(&str, &str); 5] = [
    ("left", "on the left"),
    ("right", "on the right"),
    ("top", "at the top"),
    ("bottom", "at the bottom"),
    ("centre", "in the centre"),
];
pub const BACKGROUNDS: [&str; 3] = ["white", "black", "gray"];

/// One prompt of the grid and what its picture should show.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub colour: &'static str,
    pub shape: &'static str,
    pub position: usize,
    pub background: &'static str,
}

impl Case {
    /// The caption, worded as in training: "a red circle on the left, on a white background".
    pub fn prompt(&self) -> String {
        format!(
            "a {} {} {}, on a {} background",
            self.colour, self.shape, POSITIONS[self.position].1, self.background
        )
    }
}

/// Every colour × shape × position (100 prompts), backgrounds in turn, in the order of tools/train_demo.py's grid.
pub fn grid() -> Vec<Case> {
    let mut cases = Vec::new();
    for (colour, _) in COLOURS {
        for shape in SHAPES {
            for position in 0..POSITIONS.len() {
                let background = BACKGROUNDS[cases.len() % BACKGROUNDS.len()];
                cases.push(Case {
                    colour,
                    shape,
                    position,
                    background,
                });
            }
        }
    }
    cases
}

/// One picture per case, all in one batch, at the trained size with the model's default steps and guidance;
/// case `i` is seeded `seed + i`.
pub fn draw<E: Engine>(pipe: &Pipeline<E>, cases: &[Case], seed: u64) -> Vec<Image> {
    let req = Request::for_prompts(cases.iter().map(Case::prompt))
        .size(SIDE, SIDE)
        .resolution_binning(false)
        .seed(seed);
    pipe.generate(&req, &mut |_| Control::Continue)
        .expect("the demo model generates")
        .images
}

/// Attributes the detector saw right, over `total` pictures.
#[derive(Default, Debug)]
pub struct Score {
    pub colour: usize,
    pub shape: usize,
    pub position: usize,
    pub total: usize,
}

impl Score {
    /// Judges each picture against its case, printing every miss with the detector's measurements.
    pub fn add(&mut self, cases: &[Case], images: &[Image]) {
        assert_eq!(cases.len(), images.len(), "one picture per case");
        for (case, image) in cases.iter().zip(images) {
            self.total += 1;
            let Some(v) = detect(image.width(), image.height(), image.pixels()) else {
                eprintln!(
                    "miss: {:?}: nothing stands out of the background",
                    case.prompt()
                );
                continue;
            };
            let want_position = POSITIONS[case.position].0;
            self.colour += usize::from(v.colour == case.colour);
            self.shape += usize::from(v.shape == case.shape);
            self.position += usize::from(v.position == want_position);
            if (v.colour, v.shape, v.position) != (case.colour, case.shape, want_position) {
                eprintln!(
                    "miss: {:?}: saw a {} {} ({}); mean RGB {:.0?}, fill {:.2}, offset ({:.2}, {:.2}), {} px",
                    case.prompt(),
                    v.colour,
                    v.shape,
                    v.position,
                    v.mean_rgb,
                    v.fill,
                    v.offset.0,
                    v.offset.1,
                    v.area
                );
            }
        }
    }

    /// Share of pictures with the right colour, shape and position.
    pub fn accuracy(&self) -> (f64, f64, f64) {
        let n = self.total.max(1) as f64;
        (
            self.colour as f64 / n,
            self.shape as f64 / n,
            self.position as f64 / n,
        )
    }

    /// Prints the accuracies and asserts each reaches its bar.
    #[track_caller]
    pub fn assert_at_least(&self, what: &str, colour: f64, shape: f64, position: f64) {
        let (c, s, p) = self.accuracy();
        eprintln!(
            "{what}: {} pictures: colour {:.1}%, shape {:.1}%, position {:.1}%",
            self.total,
            100.0 * c,
            100.0 * s,
            100.0 * p
        );
        assert!(c >= colour, "{what}: colour accuracy {c:.3} < {colour}");
        assert!(s >= shape, "{what}: shape accuracy {s:.3} < {shape}");
        assert!(
            p >= position,
            "{what}: position accuracy {p:.3} < {position}"
        );
    }
}
