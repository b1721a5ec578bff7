//! The denoising progress bar on stderr: redrawn in place on a terminal, silent otherwise (logs stay clean).

use std::io::{IsTerminal, Write};
use std::time::Instant;

const WIDTH: usize = 30;

pub struct Progress {
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Step `done` of `total` has finished.
    pub fn update(&mut self, done: usize, total: usize) {
        if !self.tty || total == 0 {
            return;
        }
        let filled = WIDTH * done / total;
        let per_step = self.start.elapsed().as_secs_f64() / done.max(1) as f64;
        let mut err = std::io::stderr().lock();
        // A failed write to stderr is not worth failing the generation for.
        let _ = write!(
            err,
            "\rdenoising [{}{}] {done}/{total} steps, {per_step:.2} s/step",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled)
        );
        if done == total {
            let _ = writeln!(err);
        }
    }
}
