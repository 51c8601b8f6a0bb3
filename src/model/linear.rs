//! `LinearNoiseModel`: eps(x, t) = factor * x, the analytic toy model of the diffusers fixtures.

use std::sync::Mutex;

use super::{Conditioning, NoiseModel};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor, Kernel};
use crate::nn::elementwise::{AFFINE, ElementwiseParams};

/// A model whose prediction is `factor * x`, independent of the timestep: with factor 0.1 it is
/// the toy model the diffusers reference trajectories were made with.
pub struct LinearNoiseModel {
    factor: f32,
    /// The uniform, and the bind group of the last (sample, output) pair it was used with.
    state: Mutex<Option<BoundBuffers>>,
}

struct BoundBuffers {
    sample: wgpu::Buffer,
    output: wgpu::Buffer,
    params: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

impl LinearNoiseModel {
    /// The model `eps = factor * x`.
    pub fn new(factor: f32) -> Self {
        Self {
            factor,
            state: Mutex::new(None),
        }
    }
}

impl NoiseModel for LinearNoiseModel {
    fn predict(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        _timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()> {
        if output.shape() != sample.shape() {
            return Err(Error::Shape {
                tensor: output.name().to_string(),
                expected: format!("the sample's shape {:?}", sample.shape()),
                found: format!("{:?}", output.shape()),
            });
        }
        let kernel = gpu.kernel(&AFFINE);
        let device = gpu.device();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let bound = match state.take() {
            Some(bound) if bound.sample == *sample.buffer() && bound.output == *output.buffer() => {
                state.insert(bound)
            }
            _ => {
                let params = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("linear noise model params"),
                    size: std::mem::size_of::<ElementwiseParams>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let bind_group = kernel.bind_group(
                    device,
                    &[
                        params.as_entire_binding(),
                        sample.buffer().as_entire_binding(),
                        sample.buffer().as_entire_binding(),
                        output.buffer().as_entire_binding(),
                    ],
                );
                state.insert(BoundBuffers {
                    sample: sample.buffer().clone(),
                    output: output.buffer().clone(),
                    params,
                    bind_group,
                })
            }
        };
        let params = ElementwiseParams::affine(sample.len(), self.factor, 0.0);
        gpu.queue()
            .write_buffer(&bound.params, 0, bytemuck::bytes_of(&params));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("linear noise model"),
            timestamp_writes: None,
        });
        let grid = Kernel::grid_for(
            sample.len(),
            gpu.limits().max_compute_workgroups_per_dimension,
        );
        kernel.dispatch(&mut pass, &bound.bind_group, &[], grid);
        Ok(())
    }
}
