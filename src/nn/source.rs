//! Where layer weights come from, and the module path they are looked up under.
//!
//! A layer's `load` takes a [`WeightPath`] that already points at its module
//! (`down_blocks.1.resnets.0`) and asks for its tensors by their last name (`conv1.weight`);
//! [`WeightPath::pp`] descends one level, as candle's `VarBuilder::pp` does. The names are then
//! exactly the checkpoint's keys, so a reader can hold the code against the key list.

use std::fmt::Display;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor};

use super::weights::Weights;

/// Where layer weights come from: a checkpoint, or random values for benchmarks.
pub trait TensorSource {
    /// The tensor `name` with exactly `shape`, as f32.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

impl TensorSource for Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Weights::take(self, name, shape)
    }
}

/// Deterministic pseudo-random weights (uniform in ±0.05; GroupNorm scales near 1) for running
/// an architecture without its checkpoint, e.g. to benchmark google/ddpm-cifar10-32's layout.
pub struct RandomWeights {
    state: u64,
}

impl RandomWeights {
    /// Weights drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_unit(&mut self) -> f32 {
        // SplitMix64: a stable, dependency-free generator.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl TensorSource for RandomWeights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let len = shape.iter().product();
        let center = if name.contains("norm") && name.ends_with(".weight") {
            1.0
        } else {
            0.0
        };
        Ok((0..len)
            .map(|_| center + (self.next_unit() - 0.5) * 0.1)
            .collect())
    }
}

/// A [`TensorSource`] seen from one module path, with the device the weights go to.
pub struct WeightPath<'a> {
    gpu: &'a Gpu,
    source: &'a mut dyn TensorSource,
    prefix: String,
}

impl<'a> WeightPath<'a> {
    /// The root of `source` (no prefix).
    pub fn new(gpu: &'a Gpu, source: &'a mut dyn TensorSource) -> Self {
        Self {
            gpu,
            source,
            prefix: String::new(),
        }
    }

    /// The sub-module `name` (`pp("resnets.0")`, or `pp(format!("resnets.{j}"))`); `pp("")`
    /// is this path again.
    pub fn pp(&mut self, name: impl Display) -> WeightPath<'_> {
        let name = name.to_string();
        let prefix = match name.as_str() {
            "" => self.prefix.clone(),
            name => self.name(name),
        };
        WeightPath {
            gpu: self.gpu,
            source: &mut *self.source,
            prefix,
        }
    }

    /// The full checkpoint name of tensor `name` under this path.
    pub fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The label of one layer made of the layers `names` under this path (`""`: the path
    /// itself): the one layer's name, or the first's followed by `+`.
    pub fn stack_label(&self, names: &[&str]) -> String {
        let first = match names.first().copied().unwrap_or_default() {
            "" => self.prefix.clone(),
            name => self.name(name),
        };
        match names.len() {
            0 | 1 => first,
            _ => format!("{first}+"),
        }
    }

    /// The module path itself (`down_blocks.1.resnets.0`), for labels.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device the weights are uploaded to.
    pub fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    /// Tensor `name` under this path with exactly `shape`, on the host.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.name(name);
        self.source.take(&full, shape)
    }

    /// Tensor `name` under this path with exactly `shape`, uploaded to a storage buffer.
    pub fn upload(&mut self, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        let full = self.name(name);
        let data = self.source.take(&full, shape)?;
        GpuTensor::from_slice(self.gpu, shape, &data, &full)
    }
}
