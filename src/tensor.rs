//! `HostTensor`: a dense, row-major f32 tensor in host memory. It is the CPU engine's tensor, the exchange format
//! with every other engine (upload/download), and what `sana-run eval` reads and writes.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use half::{bf16, f16, slice::HalfFloatSliceExt};

use crate::error::{Error, Result};

/// A dense, row-major f32 tensor in host memory: a shape and `shape.iter().product()` values.
///
/// A checkpoint's bf16/f16 weights can stay in their 2 bytes ([`HostTensor::from_half`]): the CPU engine's GEMMs,
/// convolutions and embedding widen them a cache-sized tile at a time ([`HostTensor::half`],
/// [`HostTensor::widened`]), which halves a model's host memory (Gemma-2-2B: 5.2 GB instead of 10.5). Every other
/// reader sees the same f32 values through [`HostTensor::data`], widened once on first use and kept.
#[derive(Clone, Debug)]
pub struct HostTensor {
    shape: Vec<usize>,
    values: Values,
}

/// Where a tensor's values live.
#[derive(Clone, Debug)]
enum Values {
    F32(Vec<f32>),
    /// Shared, so that cloning a weight copies neither its values nor their widened copy.
    Half(Arc<HalfStore>),
}

/// A 16-bit tensor's values and, once [`HostTensor::data`] asked for them, their f32 copy.
#[derive(Debug)]
struct HalfStore {
    half: HalfValues,
    widened: OnceLock<Vec<f32>>,
}

/// A tensor's values in a 16-bit float format, as a checkpoint stores them.
#[derive(Debug, PartialEq)]
pub enum HalfValues {
    /// bfloat16: f32's exponent, 8 significant bits.
    Bf16(Vec<bf16>),
    /// IEEE half: 5 exponent bits, 11 significant bits.
    F16(Vec<f16>),
}

impl HalfValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::Bf16(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Widens the values from `start` into `out` (exactly: every bf16 and f16 value is an f32 value).
    ///
    /// # Panics
    /// When `start + out.len()` passes the end: callers index within the tensor's shape.
    pub fn widen_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Self::Bf16(v) => v[start..start + out.len()].convert_to_f32_slice(out),
            Self::F16(v) => v[start..start + out.len()].convert_to_f32_slice(out),
        }
    }

    /// Every value widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.widen_into(0, &mut out);
        out
    }
}

impl PartialEq for HostTensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data() == other.data()
    }
}

impl HostTensor {
    /// Wraps `data` as a tensor of `shape`; the element count must match.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        Self::shaped("HostTensor::new", shape, Values::F32(data))
    }

    /// Keeps 16-bit values as they are, as a tensor of `shape`; the element count must match.
    pub fn from_half(shape: Vec<usize>, half: HalfValues) -> Result<Self> {
        let store = HalfStore {
            half,
            widened: OnceLock::new(),
        };
        Self::shaped(
            "HostTensor::from_half",
            shape,
            Values::Half(Arc::new(store)),
        )
    }

    /// `values` as a tensor of `shape`, or an error naming `op` when the element counts differ.
    fn shaped(op: &'static str, shape: Vec<usize>, values: Values) -> Result<Self> {
        let tensor = Self { shape, values };
        let want: usize = tensor.shape.iter().product();
        if want != tensor.len() {
            return Err(Error::shape(
                op,
                format!(
                    "shape {:?} needs {want} elements, got {}",
                    tensor.shape,
                    tensor.len()
                ),
            ));
        }
        Ok(tensor)
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            values: Values::F32(vec![0.0; n]),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major (last axis contiguous). A 16-bit tensor is widened on the first call and the f32 copy
    /// kept: hot paths over large weights read [`Self::half`] or [`Self::widened`] instead.
    pub fn data(&self) -> &[f32] {
        match &self.values {
            Values::F32(v) => v,
            Values::Half(store) => store.widened.get_or_init(|| store.half.to_f32()),
        }
    }

    /// The 16-bit values of a tensor that keeps them ([`Self::from_half`]), for kernels that widen per tile.
    pub fn half(&self) -> Option<&HalfValues> {
        match &self.values {
            Values::F32(_) => None,
            Values::Half(store) => Some(&store.half),
        }
    }

    /// The values as f32, borrowed when they are f32 or already widened, else widened into a copy that the caller
    /// drops: for a weight an op reads once per call (a convolution's reordering), so it is never kept twice.
    pub fn widened(&self) -> Cow<'_, [f32]> {
        match &self.values {
            Values::F32(v) => Cow::Borrowed(v),
            Values::Half(store) => match store.widened.get() {
                Some(v) => Cow::Borrowed(v),
                None => Cow::Owned(store.half.to_f32()),
            },
        }
    }

    /// The values, row-major, for writing in place (a 16-bit tensor becomes f32 first).
    pub fn data_mut(&mut self) -> &mut [f32] {
        if let Values::Half(_) = self.values {
            self.values = Values::F32(self.data().to_vec());
        }
        match &mut self.values {
            Values::F32(v) => v,
            Values::Half(_) => unreachable!("converted to f32 above"),
        }
    }

    /// Copies `src`'s values into this tensor in place (`op` names the caller in the error when the shapes differ).
    pub fn copy_from(&mut self, op: &'static str, src: &HostTensor) -> Result<()> {
        if src.shape != self.shape {
            return Err(Error::shape(
                op,
                format!("copying {:?} into {:?}", src.shape, self.shape),
            ));
        }
        self.data_mut().copy_from_slice(src.data());
        Ok(())
    }

    /// The values, row-major, without the shape.
    pub fn into_data(self) -> Vec<f32> {
        match self.values {
            Values::F32(v) => v,
            Values::Half(store) => match store.widened.get() {
                Some(v) => v.clone(),
                None => store.half.to_f32(),
            },
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::Half(store) => store.half.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Same values, new shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::shaped("HostTensor::reshape", shape, self.values)
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of vectors along the last dimension.
    pub fn rows(&self) -> usize {
        self.len() / self.last_dim().max(1)
    }

    /// Fails with a shape error naming `op` unless the rank and sizes match `expected` (`None` = any size).
    pub fn expect_shape(&self, op: &'static str, expected: &[Option<usize>]) -> Result<()> {
        let ok = self.shape.len() == expected.len()
            && self
                .shape
                .iter()
                .zip(expected)
                .all(|(a, e)| e.is_none_or(|e| e == *a));
        if ok {
            Ok(())
        } else {
            Err(Error::shape(
                op,
                format!("got shape {:?}, expected {}", self.shape, pattern(expected)),
            ))
        }
    }
}

fn pattern(expected: &[Option<usize>]) -> String {
    let dims: Vec<String> = expected
        .iter()
        .map(|e| e.map_or_else(|| "_".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
