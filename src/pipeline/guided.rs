//! Classifier-free guidance around the conditional U-Net, as a [`NoiseModel`] any solver can
//! drive: the sample is run twice in one batch (unconditional states first, then the
//! prompt's), and the step kernel combines the two predictions (`u + scale * (c - u)`) as it
//! reads them ([`Guidance::ClassifierFree`]).

use std::sync::Mutex;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor};
use crate::model::unet_cond::UnetCondition;
use crate::model::{Conditioning, Guidance, NoiseModel};

/// The U-Net with its text states and guidance scale fixed for one generation.
pub(crate) struct GuidedUnet<'a> {
    unet: &'a UnetCondition,
    /// [2B, T, cross_attention_dim]: the negative (or empty) prompt's states, then the
    /// prompt's; [B, T, cross_attention_dim] without guidance.
    context: GpuTensor,
    /// The guidance scale; `None`: no guidance (one pass on the prompt's states).
    scale: Option<f32>,
    /// The sample twice ([2B, C, H, W]), the U-Net's input under guidance; allocated for the
    /// first batch seen.
    doubled: Mutex<Option<GpuTensor>>,
}

impl<'a> GuidedUnet<'a> {
    /// The model for `unet` with `context` (uncond then cond halves with a `scale`, the
    /// prompt's states alone without).
    pub fn new(unet: &'a UnetCondition, context: GpuTensor, scale: Option<f32>) -> Self {
        Self {
            unet,
            context,
            scale,
            doubled: Mutex::new(None),
        }
    }
}

impl NoiseModel for GuidedUnet<'_> {
    fn guidance(&self) -> Guidance {
        match self.scale {
            Some(scale) => Guidance::ClassifierFree { scale },
            None => Guidance::None,
        }
    }

    /// Under guidance `output` is [2B, C, H, W]: the U-Net's unconditional predictions, then
    /// its conditional ones, uncombined.
    fn predict(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()> {
        if self.scale.is_none() {
            return self
                .unet
                .record(encoder, sample, timesteps, &self.context, output);
        }
        let shape = sample.shape();
        let doubled_shape = [2 * shape[0], shape[1], shape[2], shape[3]];
        let mut doubled = self.doubled.lock().unwrap_or_else(|e| e.into_inner());
        let samples = match doubled.take() {
            Some(samples) if samples.shape() == doubled_shape => samples,
            _ => GpuTensor::zeros(gpu, &doubled_shape, "doubled sample")?,
        };
        // Two copies: the U-Net's graph reads a [2B, ..] input (its first convolution does not
        // index the batch modulo B).
        let bytes = (sample.len() * 4) as u64;
        encoder.copy_buffer_to_buffer(sample.buffer(), 0, samples.buffer(), 0, bytes);
        encoder.copy_buffer_to_buffer(sample.buffer(), 0, samples.buffer(), bytes, bytes);
        let timesteps: Vec<u32> = timesteps.iter().chain(timesteps).copied().collect();
        let recorded = self
            .unet
            .record(encoder, &samples, &timesteps, &self.context, output);
        *doubled = Some(samples);
        recorded
    }
}
