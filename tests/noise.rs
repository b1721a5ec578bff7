//! `sana::noise`: the algorithm is pinned by published reference vectors and by values from an independent Python
//! implementation of the module documentation; the statistics check the Box–Muller step.

use sana::noise::{latents, splitmix64, GaussianNoise, Xoshiro256PlusPlus};

#[test]
fn xoshiro256plusplus_reference_vector() {
    // From the reference C implementation, state [1, 2, 3, 4] (as in rand_xoshiro's tests).
    let mut rng = Xoshiro256PlusPlus::from_state([1, 2, 3, 4]);
    let want: [u64; 10] = [
        41943041,
        58720359,
        3588806011781223,
        3591011842654386,
        9228616714210784205,
        9973669472204895162,
        14011001112246962877,
        12406186145184390807,
        15849039046786891736,
        10450023813501588000,
    ];
    let got: Vec<u64> = (0..10).map(|_| rng.next_u64()).collect();
    assert_eq!(got, want);
}

#[test]
fn splitmix64_reference_vector() {
    let mut x = 0;
    let got: Vec<u64> = (0..3).map(|_| splitmix64(&mut x)).collect();
    assert_eq!(
        got,
        [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f]
    );
}

#[test]
fn normals_match_independent_implementation() {
    // f32 bit patterns from a Python transcription of the module documentation (math.log/cos/sin in f64).
    let cases: [(u64, [u32; 6]); 2] = [
        (
            0,
            [
                0xbf8dcff3, 0x3f8176eb, 0x3fb696f9, 0x3dd2a3ec, 0x3f967929, 0x3e1c6b45,
            ],
        ),
        (
            42,
            [
                0xbe8986e8, 0x3f14fc0e, 0xbd5f13b9, 0xbe2fe6a0, 0xbf141d84, 0xbeb710ec,
            ],
        ),
    ];
    for (seed, want) in cases {
        let got: Vec<u32> = GaussianNoise::new(seed)
            .fill(6)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn same_seed_same_values_different_seed_different_values() {
    let a = GaussianNoise::new(7).fill(1000);
    assert_eq!(a, GaussianNoise::new(7).fill(1000));
    let b = GaussianNoise::new(8).fill(1000);
    assert!(a.iter().zip(&b).filter(|(x, y)| x == y).count() < 5);
}

#[test]
fn stream_does_not_depend_on_call_sizes() {
    let whole = GaussianNoise::new(3).fill(10);
    let mut g = GaussianNoise::new(3);
    let mut parts = g.fill(3);
    parts.extend(g.fill(1));
    parts.push(g.sample());
    parts.extend(g.fill(5));
    assert_eq!(parts, whole);
}

#[test]
fn latents_batch_element_b_uses_seed_plus_b() {
    let t = latents(100, &[3, 4, 2, 2]);
    assert_eq!(t.shape(), [3, 4, 2, 2]);
    for (b, chunk) in t.data().chunks(16).enumerate() {
        assert_eq!(
            chunk,
            GaussianNoise::new(100 + b as u64).fill(16).as_slice()
        );
    }
    // Image 1 of `--batch 3 --seed 100` is the single image of `--seed 101`.
    assert_eq!(&t.data()[16..32], latents(101, &[1, 4, 2, 2]).data());
    // The seed wraps.
    let w = latents(u64::MAX, &[2, 5]);
    assert_eq!(&w.data()[5..], GaussianNoise::new(0).fill(5).as_slice());
}

#[test]
fn latents_degenerate_shapes() {
    assert!(latents(1, &[0, 32, 4, 4]).is_empty());
    assert!(latents(1, &[2, 0]).is_empty());
    assert_eq!(
        latents(1, &[]).data(),
        GaussianNoise::new(1).fill(1).as_slice()
    );
}

#[test]
fn statistics_of_1e5_samples() {
    // Bounds are 5 standard errors for n = 1e5 standard normals: mean 1/√n = 0.0032, variance √(2/n) = 0.0045,
    // lag-1 product 1/√n, tail fraction P(|z| > 1.96) = 0.05 with √(0.05·0.95/n) = 0.0007. A correct generator fails
    // one of these with probability below 1e-5.
    let n = 100_000;
    let z: Vec<f64> = GaussianNoise::new(12345)
        .fill(n)
        .into_iter()
        .map(f64::from)
        .collect();
    assert!(z.iter().all(|v| v.is_finite() && v.abs() <= 8.58));
    let nf = n as f64;
    let mean = z.iter().sum::<f64>() / nf;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let lag1 = z.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (nf - 1.0);
    let tail = z.iter().filter(|v| v.abs() > 1.959964).count() as f64 / nf;
    let se = 1.0 / nf.sqrt();
    assert!(mean.abs() < 5.0 * se, "mean {mean}");
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
        "variance {var}"
    );
    assert!(lag1.abs() < 5.0 * se, "lag-1 {lag1}");
    assert!(
        (tail - 0.05).abs() < 5.0 * (0.05f64 * 0.95 / nf).sqrt(),
        "tail {tail}"
    );
}
