//! Noise-prediction models: the trait the sampler drives, and an analytic test model.

mod linear;
pub mod unet;

pub use linear::LinearNoiseModel;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor};

/// A noise-prediction network run on the GPU: given the sample x_t and the timestep of each
/// batch element, it writes its prediction (noise, velocity or x0, as the scheduler's
/// `prediction_type` says) into a buffer the sampler owns.
///
/// The sampler calls `predict` once per step, records its own step kernel after it in the same
/// encoder and submits the encoder before calling `predict` again, so uniforms written with
/// `gpu.queue().write_buffer` inside `predict` are in place when the recorded commands run.
pub trait NoiseModel {
    /// Channels of the prediction for a sample with `sample_channels` channels: the same, or
    /// twice as many for models that also predict a variance (`learned`, `learned_range`).
    fn output_channels(&self, sample_channels: usize) -> usize {
        sample_channels
    }

    /// Records the forward pass into `encoder`: reads `sample` ([B, C, H, W]) and writes
    /// `output` ([B, output_channels(C), H, W]). `timesteps` has one entry per batch element.
    fn predict(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        output: &GpuTensor,
    ) -> Result<()>;
}
