//! Every kernel parameter struct checked field by field against its C declaration: each field's offset and size in
//! the `#[repr(C)]` struct of src/launch/ (`core::mem::offset_of!`) against the emulation build's (g++) layout of the
//! struct of kernels/*.cu (`offsetof`, exported by `SANA_PARAMS_LAYOUT` in kernels/common.cuh). The size asserts on
//! both sides miss two fields swapped within a struct, or a field renamed on one side only; this does not. The
//! emulation build lays the structs out as nvcc does: both follow the x86-64/aarch64 C ABI (plain `void*`,
//! `unsigned`, `float` fields).

use std::ffi::{c_char, CStr};
use std::path::Path;

use sana::launch::{
    attention, causal_attention, conv, conv3x3, elementwise, embed, layout, linear_attn, norm,
    sampler,
};

/// `sana_emu::FieldLayout` of kernels/common.cuh.
#[repr(C)]
struct FieldLayout {
    name: *const c_char,
    offset: usize,
    size: usize,
}

/// One struct's layout: its size and, in declaration order, each field's name, offset and size.
struct Layout {
    name: &'static str,
    size: usize,
    fields: Vec<(String, usize, usize)>,
}

/// For each `module::Struct { every field }`: the Rust layout, the C layout the emulation build exports, and a
/// pattern binding every field (a field added to the Rust struct without being listed here does not compile).
macro_rules! layouts {
    ($($module:ident :: $ty:ident { $($field:ident),* $(,)? })*) => {
        vec![$({
            type T = $module::$ty;
            #[allow(dead_code)]
            fn every_field_is_listed(p: T) {
                let T { $($field: _),* } = p;
            }
            extern "C" {
                #[link_name = concat!("sana_emu_layout_", stringify!($ty))]
                fn c_layout(fields: *mut *const FieldLayout, struct_size: *mut usize) -> usize;
            }
            let zeroed: T = bytemuck::Zeroable::zeroed();
            let rust = Layout {
                name: stringify!($ty),
                size: std::mem::size_of::<T>(),
                fields: vec![$((
                    stringify!($field).to_string(),
                    core::mem::offset_of!(T, $field),
                    std::mem::size_of_val(&zeroed.$field),
                )),*],
            };
            let (mut table, mut size) = (std::ptr::null(), 0usize);
            // SAFETY: the entry writes a pointer to a static table of the count it returns, and the struct's size.
            let c = unsafe {
                let count = c_layout(&mut table, &mut size);
                let fields = std::slice::from_raw_parts(table, count)
                    .iter()
                    .map(|f| (CStr::from_ptr(f.name).to_str().unwrap().to_string(), f.offset, f.size))
                    .collect();
                Layout { name: stringify!($ty), size, fields }
            };
            (rust, c)
        }),*]
    };
}

fn all_layouts() -> Vec<(Layout, Layout)> {
    layouts! {
        attention::AttentionParams { out, q, k, v, key_bias, n, l, heads, d, stride, scale }
        causal_attention::CausalAttentionParams {
            out, q, k, v, key_mask, l, heads, group, d, q_stride, kv_stride, window, scale, softcap, pad
        }
        conv::DwConvGluParams { out, x, w, bias, h, width, f, rows }
        conv::DepthwiseConvParams { out, x, w, bias, h, width, c, k, rows, reserved }
        conv::GroupedLinearParams { out, x, w, rows_total, cin, cout, group_in, group_out, rows, reserved }
        conv3x3::Conv3x3Params { out, x, w, bias, batch, h, width, oh, ow, cin, cout, stride }
        elementwise::ModulationParams { out, table, emb, batch, k, d, per_row }
        elementwise::PointwiseParams { y, a, b, len, act, aligned }
        elementwise::GatedResidualParams { y, x, r, modulation, rows, n, d, k, gate_row, aligned }
        elementwise::ResidualNormParams {
            x_out, z, x, r, gate_modulation, modulation, n, d, gate_k, gate_row, k, shift_row, scale_row, eps
        }
        embed::EmbeddingParams { out, table, ids, n, d, vocab, scale, aligned, pad }
        embed::RotaryParams { y, x, cos, sin, rows, l, heads, d }
        layout::TransposeParams { out, x, rows, cols }
        layout::ChannelSpaceParams { out, x, total, mode, repeat, h, w, cx, cout }
        layout::SplitQkvParams { q, k, v, x, total, c, d }
        layout::ConcatParams { out, a, b, total, ca, cb }
        layout::GroupMeanParams { out, x, total, g, reserved }
        linear_attn::LinearAttentionParams {
            out, q, k, v, partials, state, n, heads, chunks, chunk_tokens, eps, aligned
        }
        norm::LayerNormModulateParams { y, x, modulation, n, d, k, shift_row, scale_row, eps }
        norm::RmsNormParams { y, x, w, b, d, plus_one, eps, pad }
        sampler::ModelInputParams { out, x, schedule, len, copies, steps }
        sampler::SinusoidParams { out, schedule, batch, half, neg_log_10000, steps }
        sampler::FlowStepParams { x, x0_prev, output, schedule, noise, len, guidance, guide, steps, pad }
        sampler::AdvanceParams { schedule }
    }
}

/// What differs between the Rust and the C layout of one struct, one line each.
fn differences(rust: &Layout, c: &Layout) -> Vec<String> {
    let mut out = Vec::new();
    if rust.size != c.size {
        out.push(format!(
            "{}: {} bytes in Rust, {} in C",
            rust.name, rust.size, c.size
        ));
    }
    let names = |l: &Layout| l.fields.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    if names(rust) != names(c) {
        out.push(format!(
            "{}: fields {:?} in Rust, {:?} in C",
            rust.name,
            names(rust),
            names(c)
        ));
    }
    for (name, offset, size) in &rust.fields {
        match c.fields.iter().find(|f| &f.0 == name) {
            Some((_, c_offset, c_size)) if (c_offset, c_size) != (offset, size) => out.push(format!(
                "{}.{name}: offset {offset}, {size} bytes in Rust; offset {c_offset}, {c_size} bytes in C",
                rust.name
            )),
            _ => {}
        }
    }
    out
}

#[test]
fn every_params_struct_matches_its_c_declaration_field_by_field() {
    let layouts = all_layouts();
    let wrong: Vec<String> = layouts
        .iter()
        .flat_map(|(rust, c)| differences(rust, c))
        .collect();
    assert!(
        wrong.is_empty(),
        "params structs differ from kernels/*.cu:\n{}",
        wrong.join("\n")
    );
    let fields: usize = layouts.iter().map(|(rust, _)| rust.fields.len()).sum();
    eprintln!(
        "{} params structs, {fields} fields: offsets and sizes match",
        layouts.len()
    );
}

/// Every `struct …Params` of kernels/*.cu is exported with `SANA_PARAMS_LAYOUT` and checked above.
#[test]
fn every_params_struct_of_the_kernels_is_checked() {
    let checked: Vec<&str> = all_layouts().iter().map(|(rust, _)| rust.name).collect();
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut declared = Vec::new();
    for entry in std::fs::read_dir(&kernels).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let source = std::fs::read_to_string(&path).unwrap();
            for line in source.lines() {
                if let Some(name) = line
                    .strip_prefix("struct ")
                    .and_then(|l| l.strip_suffix(" {"))
                {
                    if name.ends_with("Params") {
                        assert!(
                            source.contains(&format!("SANA_PARAMS_LAYOUT({name},")),
                            "{}: {name} has no SANA_PARAMS_LAYOUT",
                            path.display()
                        );
                        declared.push(name.to_string());
                    }
                }
            }
        }
    }
    declared.sort();
    let mut checked: Vec<String> = checked.iter().map(|s| s.to_string()).collect();
    checked.sort();
    assert_eq!(
        declared, checked,
        "params structs of kernels/*.cu against those this test checks"
    );
}
