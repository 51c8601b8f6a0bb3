//! Noise-prediction models: the trait the sampler drives, and an analytic test model.

pub mod clip_text;
mod linear;
pub mod unet;
pub mod unet_cond;
pub mod vae;

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

    /// How many predictions the model writes per sample and how the sampler combines them:
    /// [`Guidance::None`] (the default) for one, [`Guidance::ClassifierFree`] for an
    /// unconditional and a conditional one that the step kernel combines.
    fn guidance(&self) -> Guidance {
        Guidance::None
    }

    /// Records the forward pass into `encoder`: reads `sample` ([B, C, H, W]) and writes
    /// `output` ([P * B, output_channels(C), H, W], P the predictions per sample of
    /// [`guidance`](Self::guidance)). `timesteps` has one entry per batch element;
    /// `conditioning` is what the caller conditions this run on (a model refuses conditioning
    /// it cannot use, and fails when conditioning it needs is missing).
    fn predict(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()>;
}

/// How a model's predictions for one sample are combined into the one the solver steps with
/// ([`NoiseModel::guidance`]). The sampler allocates the model's output for it and the step
/// kernel combines the predictions as it reads them, so guidance costs no extra dispatch and
/// works with every solver.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Guidance {
    /// One prediction per sample: the output is [B, C, H, W].
    #[default]
    None,
    /// Classifier-free guidance: the output is [2B, C, H, W], the B unconditional predictions
    /// u first, then the B conditional ones c; the solver steps with `u + scale * (c - u)`
    /// (diffusers' expression and order, in f32).
    ClassifierFree {
        /// The guidance scale.
        scale: f32,
    },
}

impl Guidance {
    /// Predictions the model writes per sample: 1, or 2 with classifier-free guidance.
    pub fn predictions_per_sample(self) -> usize {
        match self {
            Self::None => 1,
            Self::ClassifierFree { .. } => 2,
        }
    }
}

/// What a noise model is conditioned on besides the sample and the timestep, passed to every
/// [`NoiseModel::predict`] of a run ([`crate::SamplingRun::set_conditioning`]): class labels.
/// (The text-to-image pipeline's guided U-Net holds its text states itself, and says how its
/// predictions combine with [`NoiseModel::guidance`].)
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Conditioning {
    /// One class label per batch element, for class-conditional models (`num_class_embeds`).
    pub class_labels: Option<Vec<u32>>,
}

impl Conditioning {
    /// No conditioning (an unconditional model).
    pub fn none() -> Self {
        Self::default()
    }

    /// Class labels, one per batch element.
    pub fn class_labels(labels: Vec<u32>) -> Self {
        Self {
            class_labels: Some(labels),
        }
    }
}
