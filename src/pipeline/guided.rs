//! Classifier-free guidance around the conditional U-Net, as a [`NoiseModel`] any solver can
//! drive: the sample is run twice in one batch (unconditional states first, then the
//! prompt's), and the step kernel combines the two predictions (`u + scale * (c - u)`) as it
//! reads them ([`Guidance::ClassifierFree`]).

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
}

impl<'a> GuidedUnet<'a> {
    /// The model for `unet` with `context` (uncond then cond halves with a `scale`, the
    /// prompt's states alone without).
    pub fn new(unet: &'a UnetCondition, context: GpuTensor, scale: Option<f32>) -> Self {
        Self {
            unet,
            context,
            scale,
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
        _gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()> {
        // Under guidance the U-Net's input is the sample twice, copied into its [2B, ..] input.
        let copies = if self.scale.is_some() { 2 } else { 1 };
        self.unet
            .record_repeated(encoder, sample, copies, timesteps, &self.context, output)
    }
}
