//! The CPU engine keeps a checkpoint's bf16/f16 weights in 16 bits (`HostTensor::from_half`) and widens them per
//! tile inside its ops. Widening is exact (every bf16 and f16 value is an f32 value) and the ops run the same f32
//! arithmetic in the same order, so each op with a 16-bit weight must equal, bit for bit, the same op with that
//! weight widened to f32 first, on fresh random inputs: the bound is 0, not a tolerance.

mod common;

use common::Rng;
use half::{bf16, f16};
use sana::engine::cpu::CpuEngine;
use sana::engine::{Activation, Engine};
use sana::tensor::{HalfValues, HostTensor};
use sana::weights::Weights;

#[derive(Clone, Copy, Debug)]
enum Format {
    Bf16,
    F16,
}

/// A random weight in 16 bits and the same values widened to f32.
fn weight(rng: &mut Rng, shape: &[usize], format: Format) -> (HostTensor, HostTensor) {
    let values = rng.tensor(shape);
    let half = match format {
        Format::Bf16 => {
            HalfValues::Bf16(values.data().iter().map(|&v| bf16::from_f32(v)).collect())
        }
        Format::F16 => HalfValues::F16(values.data().iter().map(|&v| f16::from_f32(v)).collect()),
    };
    let widened = HostTensor::new(shape.to_vec(), half.to_f32()).unwrap();
    let kept = HostTensor::from_half(shape.to_vec(), half).unwrap();
    assert!(
        kept.half().is_some(),
        "from_half must keep the 16-bit values"
    );
    (kept, widened)
}

fn assert_bitwise(what: &str, got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let differing = got
        .data()
        .iter()
        .zip(want.data())
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} values differ",
        got.len()
    );
}

#[test]
fn linear_with_a_16_bit_weight_equals_the_widened_weight() {
    let cpu = CpuEngine;
    // (rows, in, out): a weight widened whole (≤ 2²⁰ values), weights split into panels of output columns (out not
    // a multiple of the panel count, a panel narrower than a micro-tile), and a single row.
    let cases = [
        (37, 200, 300),
        (70, 640, 2100),
        (5, 1100, 1031),
        (1, 1030, 1500),
    ];
    for (i, &(rows, k, n)) in cases.iter().enumerate() {
        for format in [Format::Bf16, Format::F16] {
            let mut rng = Rng::new(100 + i as u64);
            let x = rng.tensor(&[rows, k]);
            let (w, w32) = weight(&mut rng, &[n, k], format);
            let b = rng.tensor(&[n]);
            for act in [Activation::Identity, Activation::Silu] {
                let got = cpu.linear(&x, &w, Some(&b), act).unwrap();
                let want = cpu.linear(&x, &w32, Some(&b), act).unwrap();
                assert_bitwise(
                    &format!("linear {rows}×{k}→{n} {format:?} {act:?}"),
                    &got,
                    &want,
                );
            }
        }
    }
}

#[test]
fn embedding_with_a_16_bit_table_equals_the_widened_table() {
    let cpu = CpuEngine;
    let mut rng = Rng::new(7);
    for format in [Format::Bf16, Format::F16] {
        let (table, table32) = weight(&mut rng, &[97, 48], format);
        let ids = [0, 96, 13, 13, 50];
        let got = cpu.embedding(&table, &ids, 6.93).unwrap();
        let want = cpu.embedding(&table32, &ids, 6.93).unwrap();
        assert_bitwise(&format!("embedding {format:?}"), &got, &want);
        // Past the table: still an error naming the id.
        let err = cpu.embedding(&table, &[97], 1.0).unwrap_err().to_string();
        assert!(err.contains("97"), "{err}");
    }
}

#[test]
fn convolutions_with_16_bit_weights_equal_the_widened_weights() {
    let cpu = CpuEngine;
    let mut rng = Rng::new(11);
    let x = rng.tensor(&[1, 5 * 7, 24]);
    let (w, w32) = weight(&mut rng, &[16, 24, 3, 3], Format::Bf16);
    let b = rng.tensor(&[16]);
    for stride in [1, 2] {
        let got = cpu.conv3x3(&x, &w, Some(&b), (5, 7), stride).unwrap();
        let want = cpu.conv3x3(&x, &w32, Some(&b), (5, 7), stride).unwrap();
        assert_bitwise(&format!("conv3x3 stride {stride}"), &got, &want);
    }

    let x = rng.tensor(&[2, 6 * 5, 2 * 20]);
    let (w, w32) = weight(&mut rng, &[40, 9], Format::F16);
    let b = rng.tensor(&[40]);
    let got = cpu.dwconv3x3_glu(&x, &w, &b, 6, 5).unwrap();
    let want = cpu.dwconv3x3_glu(&x, &w32, &b, 6, 5).unwrap();
    assert_bitwise("dwconv3x3_glu", &got, &want);
}

#[test]
fn a_16_bit_tensor_reads_as_its_widened_values_everywhere() {
    let mut rng = Rng::new(3);
    let (w, w32) = weight(&mut rng, &[6, 10], Format::Bf16);
    assert_eq!(w, w32);
    assert_eq!(w.data(), w32.data());
    assert_eq!(&*w.widened(), w32.data());
    let reshaped = w.clone().reshape(vec![60]).unwrap();
    assert!(
        reshaped.half().is_some(),
        "a reshape keeps the 16-bit values"
    );
    assert_eq!(reshaped.data(), w32.data());
    assert!(w.clone().reshape(vec![61]).is_err());
    let mut written = w.clone();
    written.data_mut()[0] = 0.5;
    assert!(written.half().is_none(), "writing makes the tensor f32");
    assert_eq!(written.data()[0], 0.5);
    assert_eq!(&written.data()[1..], &w32.data()[1..]);
    assert_eq!(w.into_data(), w32.into_data());
}

/// A checkpoint's bf16 and f16 tensors load into the CPU engine in 16 bits; f32 ones stay f32.
#[test]
fn the_cpu_engine_loads_16_bit_tensors_without_widening_them() {
    let scratch = common::scratch("cpu_half_weights_load");
    let path = scratch.join("w.safetensors");
    let bf = [1.5f32, -2.25, 3.0, 0.125].map(bf16::from_f32);
    let hf = [0.5f32, 7.0].map(f16::from_f32);
    let f = [1.0f32, 2.0];
    let tensors = [
        (
            "bf",
            safetensors::Dtype::BF16,
            vec![2, 2],
            bytemuck::cast_slice::<_, u8>(&bf).to_vec(),
        ),
        (
            "hf",
            safetensors::Dtype::F16,
            vec![2],
            bytemuck::cast_slice::<_, u8>(&hf).to_vec(),
        ),
        (
            "f",
            safetensors::Dtype::F32,
            vec![2],
            bytemuck::cast_slice::<_, u8>(&f).to_vec(),
        ),
    ];
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                *name,
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let weights = Weights::from_files(vec![path]).unwrap();
    let cpu = CpuEngine;
    let load = |name: &str, shape: &[usize]| cpu.load(&weights.get(name).unwrap(), shape).unwrap();
    let bf_t = load("bf", &[4]);
    assert!(matches!(bf_t.half(), Some(HalfValues::Bf16(_))));
    assert_eq!(bf_t.data(), &[1.5, -2.25, 3.0, 0.125]);
    let hf_t = load("hf", &[2]);
    assert!(matches!(hf_t.half(), Some(HalfValues::F16(_))));
    assert_eq!(hf_t.data(), &[0.5, 7.0]);
    let f_t = load("f", &[2]);
    assert!(f_t.half().is_none());
    assert_eq!(f_t.data(), &[1.0, 2.0]);
}
