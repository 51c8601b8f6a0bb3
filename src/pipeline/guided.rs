//! Classifier-free guidance around the conditional U-Net, as a [`NoiseModel`] any solver can
//! drive: the sample is run twice in one batch (unconditional states first, then the
//! prompt's), and `u + scale * (c - u)` is written as the model's output.

use std::sync::Mutex;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor, Kernel};
use crate::model::unet_cond::UnetCondition;
use crate::model::{Conditioning, NoiseModel};
use crate::nn::elementwise::{ElementwiseParams, GUIDANCE};

/// The U-Net with its text states and guidance scale fixed for one generation.
pub(crate) struct GuidedUnet<'a> {
    unet: &'a UnetCondition,
    /// [2B, T, cross_attention_dim]: the negative (or empty) prompt's states, then the
    /// prompt's; [B, T, cross_attention_dim] without guidance.
    context: GpuTensor,
    /// The guidance scale; `None`: no guidance (one pass on the prompt's states).
    scale: Option<f32>,
    /// The doubled sample and prediction, allocated for the first batch seen, and the
    /// guidance dispatch's bind group for the last output buffer.
    doubled: Mutex<Option<Doubled>>,
}

/// The buffers of a guided prediction for one batch size.
struct Doubled {
    samples: GpuTensor,
    predictions: GpuTensor,
    params: wgpu::Buffer,
    /// The output buffer the bind group writes, and the bind group (built once per run).
    bound: Option<(wgpu::Buffer, wgpu::BindGroup)>,
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
    fn predict(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()> {
        let Some(scale) = self.scale else {
            return self
                .unet
                .record(encoder, sample, timesteps, &self.context, output);
        };
        let shape = sample.shape();
        let doubled_shape = [2 * shape[0], shape[1], shape[2], shape[3]];
        let mut doubled = self.doubled.lock().unwrap_or_else(|e| e.into_inner());
        if doubled
            .as_ref()
            .is_none_or(|d| d.samples.shape() != doubled_shape)
        {
            let params = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("guidance params"),
                size: std::mem::size_of::<ElementwiseParams>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let guidance = ElementwiseParams::guidance(sample.len(), scale);
            gpu.queue()
                .write_buffer(&params, 0, bytemuck::bytes_of(&guidance));
            *doubled = Some(Doubled {
                samples: GpuTensor::zeros(gpu, &doubled_shape, "doubled sample")?,
                predictions: GpuTensor::zeros(gpu, &doubled_shape, "unguided prediction")?,
                params,
                bound: None,
            });
        }
        let Some(d) = doubled.as_mut() else {
            return Ok(());
        };
        let bytes = (sample.len() * 4) as u64;
        encoder.copy_buffer_to_buffer(sample.buffer(), 0, d.samples.buffer(), 0, bytes);
        encoder.copy_buffer_to_buffer(sample.buffer(), 0, d.samples.buffer(), bytes, bytes);
        let timesteps: Vec<u32> = timesteps.iter().chain(timesteps).copied().collect();
        self.unet.record(
            encoder,
            &d.samples,
            &timesteps,
            &self.context,
            &d.predictions,
        )?;
        let kernel = gpu.kernel(&GUIDANCE);
        if d.bound
            .as_ref()
            .is_none_or(|(out, _)| out != output.buffer())
        {
            let bind_group = kernel.bind_group(
                gpu.device(),
                &[
                    d.params.as_entire_binding(),
                    d.predictions.buffer().as_entire_binding(),
                    d.predictions.buffer().as_entire_binding(),
                    output.buffer().as_entire_binding(),
                ],
            );
            d.bound = Some((output.buffer().clone(), bind_group));
        }
        let Some((_, bind_group)) = d.bound.as_ref() else {
            return Ok(());
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("guidance"),
            timestamp_writes: None,
        });
        let grid = Kernel::grid_for(
            output.len(),
            gpu.limits().max_compute_workgroups_per_dimension,
        );
        kernel.dispatch(&mut pass, bind_group, &[], grid);
        Ok(())
    }
}
