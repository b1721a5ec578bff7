//! Checkpoint loading: single files, sharded indexes, 16-bit variants, prefixes, and their errors.

mod common;

use std::borrow::Cow;
use std::path::Path;

use common::{scratch, Rng};
use safetensors::tensor::{Dtype, View};
use sana::weights::Weights;
use sana::Error;

struct Raw(Dtype, Vec<usize>, Vec<u8>);

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn write(path: &Path, tensors: &[(&str, Raw)]) {
    safetensors::serialize_to_file(tensors.iter().map(|(n, r)| (*n, r)), None, path).unwrap();
}

fn f32_raw(values: &[f32], shape: &[usize]) -> Raw {
    Raw(
        Dtype::F32,
        shape.to_vec(),
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

#[test]
fn weights_sharded_index_resolves_every_key() {
    let dir = scratch("sharded");
    let mut rng = Rng::new(1);
    let a = rng.tensor(&[3, 4]);
    let b = rng.tensor(&[5]);
    write(
        &dir.join("m-00001-of-00002.safetensors"),
        &[("blocks.0.w", f32_raw(a.data(), &[3, 4]))],
    );
    write(
        &dir.join("m-00002-of-00002.safetensors"),
        &[("blocks.1.b", f32_raw(b.data(), &[5]))],
    );
    std::fs::write(
        dir.join("m.safetensors.index.json"),
        r#"{"metadata": {"total_size": 68}, "weight_map": {"blocks.0.w": "m-00001-of-00002.safetensors", "blocks.1.b": "m-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let w = Weights::open(&dir, "m").unwrap();
    assert_eq!(
        w.prefix("blocks")
            .prefix(0)
            .get("w")
            .unwrap()
            .to_f32()
            .unwrap(),
        a.data()
    );
    assert_eq!(
        w.prefix("blocks.1")
            .get_shaped("b", &[5])
            .unwrap()
            .to_f32()
            .unwrap(),
        b.data()
    );
    let err = w.prefix("blocks.1").get("w").err().unwrap();
    assert!(err.to_string().contains("blocks.1.w"), "{err}");
}

#[test]
fn weights_index_naming_a_missing_key_fails() {
    let dir = scratch("bad_index");
    write(
        &dir.join("m-1.safetensors"),
        &[("x", f32_raw(&[1.0], &[1]))],
    );
    std::fs::write(
        dir.join("m.safetensors.index.json"),
        r#"{"weight_map": {"x": "m-1.safetensors", "y": "m-1.safetensors"}}"#,
    )
    .unwrap();
    let err = Weights::open(&dir, "m").err().unwrap();
    assert!(
        matches!(err, Error::MissingTensor { ref name, .. } if name == "y"),
        "{err}"
    );
}

#[test]
fn weights_bf16_and_f16_variants_widen_exactly() {
    let dir = scratch("variants");
    let values = [1.5f32, -0.25, 3.0, 0.007_812_5];
    let bf: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let hf: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    write(
        &dir.join("m.bf16.safetensors"),
        &[
            ("a", Raw(Dtype::BF16, vec![4], bf)),
            ("b", Raw(Dtype::F16, vec![2, 2], hf)),
        ],
    );
    let w = Weights::open(&dir, "m").unwrap();
    assert_eq!(w.get("a").unwrap().to_f32().unwrap(), values);
    assert_eq!(w.get("b").unwrap().to_f32().unwrap(), values);
}

#[test]
fn weights_duplicate_key_across_shards_fails() {
    let dir = scratch("dup");
    write(&dir.join("a.safetensors"), &[("x", f32_raw(&[1.0], &[1]))]);
    write(&dir.join("b.safetensors"), &[("x", f32_raw(&[2.0], &[1]))]);
    let err = Weights::from_files(vec![dir.join("a.safetensors"), dir.join("b.safetensors")])
        .err()
        .unwrap();
    assert!(err.to_string().contains("also appears"), "{err}");
}

#[test]
fn weights_not_a_safetensors_file() {
    let dir = scratch("garbage");
    std::fs::write(
        dir.join("m.safetensors"),
        b"this is not a checkpoint at all",
    )
    .unwrap();
    let err = Weights::open(&dir, "m").err().unwrap();
    assert!(err.to_string().contains("m.safetensors"), "{err}");
}
