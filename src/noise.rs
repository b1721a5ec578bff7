//! Seeded standard-normal noise for the initial latents (docs/numerics/sampling.md §4).
//!
//! This is our own generator, not PyTorch's: diffusers' `torch.randn` streams (mt19937 on the CPU, Philox on CUDA) are
//! not reproduced, so the same seed gives a different image than diffusers. Golden tests inject diffusers' latents
//! instead. The algorithm is fixed here so that any implementation can reproduce our images:
//!
//! 1. **Seeding** — SplitMix64 (Steele, Lea, Flood 2014; reference <https://prng.di.unimi.it/splitmix64.c>): with a
//!    64-bit state `x = seed`, each output is `x += 0x9e3779b97f4a7c15; z = x; z = (z ^ (z >> 30)) ·
//!    0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) · 0x94d049bb133111eb; z ^ (z >> 31)` (wrapping u64 arithmetic). Its first
//!    four outputs are the xoshiro state `s[0..4]`, in that order.
//! 2. **Bits** — xoshiro256++ (Blackman, Vigna 2019; reference <https://prng.di.unimi.it/xoshiro256plusplus.c>):
//!    `out = rotl(s0 + s3, 23) + s0; t = s1 << 17; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 45)`.
//! 3. **Normals** — Box–Muller on pairs of outputs `(a, b)`, in f64: `u1 = ((a >> 11) + 1) · 2⁻⁵³` in (0, 1] (never
//!    `ln 0`), `u2 = (b >> 11) · 2⁻⁵³` in [0, 1), `r = √(−2 ln u1)`, `θ = 2π · u2` (2π as the f64 constant
//!    6.283185307179586), `z0 = r cos θ`, `z1 = r sin θ`, each rounded to f32. The stream is `z0, z1` of the first
//!    pair, then of the second, …; a call that ends between `z0` and `z1` keeps `z1` for the next call, so the values
//!    do not depend on how the stream is split into calls. |z| ≤ √(106 ln 2) ≈ 8.57.
//! 4. **Latents** — element `b` of a batch (the first axis) is the first `len / B` values of the stream seeded with
//!    `seed + b` (wrapping), laid out row-major. So image `b` of `--batch N --seed S` is the image of `--seed S+b`.
//!
//! The values depend on the platform's f64 `ln`, `cos` and `sin` only through their last bit, which the rounding to
//! f32 almost always hides.

use crate::tensor::HostTensor;

/// One SplitMix64 step: advances `state` and returns the next output.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The xoshiro256++ generator of 64-bit words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xoshiro256PlusPlus {
    s: [u64; 4],
}

impl Xoshiro256PlusPlus {
    /// The generator with this exact state (not all zero, or it outputs only zeros).
    pub fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }

    /// The state is four successive SplitMix64 outputs from `seed`, which is never all zero.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        Self {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// The next 64-bit output; advances the state.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let out = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        out
    }
}

/// Standard normals from one seed; see the module documentation for the exact algorithm.
#[derive(Clone, Debug)]
pub struct GaussianNoise {
    bits: Xoshiro256PlusPlus,
    spare: Option<f32>,
}

impl GaussianNoise {
    /// The stream of `seed` (its generator seeded by [`Xoshiro256PlusPlus::seed_from_u64`]).
    pub fn new(seed: u64) -> Self {
        Self {
            bits: Xoshiro256PlusPlus::seed_from_u64(seed),
            spare: None,
        }
    }

    /// The next value of the stream.
    pub fn sample(&mut self) -> f32 {
        if let Some(z1) = self.spare.take() {
            return z1;
        }
        let (z0, z1) = self.pair();
        self.spare = Some(z1);
        z0
    }

    /// The next `n` values of the stream.
    pub fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sample()).collect()
    }

    fn pair(&mut self) -> (f32, f32) {
        const TWO_POW_M53: f64 = 1.0 / (1u64 << 53) as f64;
        let u1 = ((self.bits.next_u64() >> 11) + 1) as f64 * TWO_POW_M53;
        let u2 = (self.bits.next_u64() >> 11) as f64 * TWO_POW_M53;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
    }
}

/// One stream per batch element, element `b` seeded with `seed + b` (wrapping): the initial latents are their first
/// draw, and Sana-Sprint's per-step noise continues them, so each image of a batch equals the single image
/// generated with its own seed.
#[derive(Clone, Debug)]
pub struct BatchNoise {
    streams: Vec<GaussianNoise>,
}

impl BatchNoise {
    /// `batch` streams, seeded `seed`, `seed + 1`, ….
    pub fn new(seed: u64, batch: usize) -> Self {
        Self {
            streams: (0..batch as u64)
                .map(|b| GaussianNoise::new(seed.wrapping_add(b)))
                .collect(),
        }
    }

    /// One stream per seed, in batch order: element `b` draws from `seeds[b]`'s stream, as a lone element with that
    /// seed would.
    pub fn from_seeds(seeds: &[u64]) -> Self {
        Self {
            streams: seeds.iter().map(|&s| GaussianNoise::new(s)).collect(),
        }
    }

    /// The next values of `shape` = `[batch, …]`: element `b`'s block from stream `b`. A rank-0 shape is one value
    /// of the first stream.
    pub fn draw(&mut self, shape: &[usize]) -> HostTensor {
        let mut t = HostTensor::zeros(shape.to_vec());
        let per_element = shape.iter().skip(1).product::<usize>();
        if per_element == 0 {
            return t;
        }
        for (chunk, noise) in t
            .data_mut()
            .chunks_exact_mut(per_element)
            .zip(&mut self.streams)
        {
            chunk.iter_mut().for_each(|v| *v = noise.sample());
        }
        t
    }
}

/// Initial latents of `shape` (`[B, …]`): the first draw of [`BatchNoise`] for `seed`.
pub fn latents(seed: u64, shape: &[usize]) -> HostTensor {
    BatchNoise::new(seed, shape.first().copied().unwrap_or(1)).draw(shape)
}
