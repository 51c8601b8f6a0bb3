//! Shared test helpers: the device, fixture loading and the error measure.
#![allow(dead_code)]

pub mod solver_runs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use diffusion_wgpu::{Gpu, GpuOptions};
use safetensors::{Dtype, SafeTensors};

/// The conditional U-Net of the tiny SD pipeline `pipeline` (tests/fixtures/sd/) on `gpu`, run on
/// the inputs of the reference file `refs` (`unet.sample`, `unet.timesteps`,
/// `unet.encoder_hidden_states`): its eps, and the references.
pub fn conditional_eps(
    gpu: Arc<Gpu>,
    pipeline: &str,
    refs: &str,
) -> (Vec<f32>, HashMap<String, Array>) {
    let refs = fixture(refs);
    let dir = format!(
        "{}/tests/fixtures/sd/{pipeline}/unet",
        env!("CARGO_MANIFEST_DIR")
    );
    let unet = diffusion_wgpu::model::unet_cond::UnetCondition::load(gpu, dir).unwrap();
    let sample = &refs["unet.sample"];
    let shape = <[usize; 4]>::try_from(sample.shape.as_slice()).unwrap();
    let context = &refs["unet.encoder_hidden_states"];
    let eps = unet
        .forward(
            &sample.f32(),
            shape,
            &refs["unet.timesteps"].u32(),
            &context.f32(),
            context.shape[1],
        )
        .unwrap();
    (eps, refs)
}

/// One device per test binary. Fails (never skips) when no adapter is found: CI must have one.
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        Arc::new(Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}")))
    })
    .clone()
}

/// An array from a fixture file, converted to f64 (ints and floats alike).
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn usize(&self) -> Vec<usize> {
        self.data.iter().map(|&v| v as usize).collect()
    }
    /// Integer values (timesteps, class labels) as u32.
    pub fn u32(&self) -> Vec<u32> {
        self.data.iter().map(|&v| v as u32).collect()
    }
    pub fn i64(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
    /// The `i`-th slice along the first axis.
    pub fn index(&self, i: usize) -> Vec<f64> {
        let len: usize = self.shape[1..].iter().product();
        self.data[i * len..(i + 1) * len].to_vec()
    }
}

/// All arrays of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> HashMap<String, Array> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file =
        SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.tensors()
        .into_iter()
        .map(|(key, view)| {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::I64 => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{key}: unexpected dtype {other:?}"),
            };
            (
                key,
                Array {
                    shape: view.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

/// ||a - b|| / ||b||, in f64.
pub fn rel_l2(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&a, &b) in actual.iter().zip(expected) {
        diff += (f64::from(a) - b).powi(2);
        norm += b * b;
    }
    assert!(
        norm > 0.0,
        "reference is all zeros: the comparison could not fail"
    );
    (diff / norm).sqrt()
}

/// Same as [`rel_l2`] for two f64 slices.
pub fn rel_l2_f64(actual: &[f64], expected: &[f64]) -> f64 {
    let actual: Vec<f32> = actual.iter().map(|&v| v as f32).collect();
    rel_l2(&actual, expected)
}
