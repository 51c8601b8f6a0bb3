//! A float32 tensor in a GPU storage buffer: a buffer plus its shape (row-major, NCHW for
//! images).

use std::sync::mpsc;

use super::Gpu;
use crate::error::{Error, Result};

/// A row-major f32 tensor living in a GPU storage buffer.
#[derive(Debug)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    name: String,
}

impl GpuTensor {
    /// A zero-filled tensor. Fails with [`Error::TooLarge`] when it exceeds the device's limits
    /// (see [`Gpu::check_tensor_shape`]), and with [`Error::Gpu`] when the device is out of
    /// memory or lost.
    pub fn zeros(gpu: &Gpu, shape: &[usize], name: &str) -> Result<Self> {
        let bytes = gpu.check_tensor_shape(name, shape)?;
        let buffer = gpu.create_buffer(
            &wgpu::BufferDescriptor {
                label: Some(name),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            },
            &format!("allocating tensor `{name}` ({bytes} bytes)"),
        )?;
        Ok(Self {
            buffer,
            shape: shape.to_vec(),
            name: name.to_string(),
        })
    }

    /// A tensor holding `data`, whose length must match `shape`.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32], name: &str) -> Result<Self> {
        let tensor = Self::zeros(gpu, shape, name)?;
        tensor.write(gpu, data)?;
        Ok(tensor)
    }

    /// Queues an upload of `data` (the whole tensor); it lands before the next submit runs.
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape {
                tensor: self.name.clone(),
                expected: format!("{} values for shape {:?}", self.len(), self.shape),
                found: format!("{} values", data.len()),
            });
        }
        if !data.is_empty() {
            gpu.queue()
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Copies the tensor back to the host, waiting for all submitted work first.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = (self.len() * 4) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let device = gpu.device();
        let during = format!("reading back tensor `{}`", self.name);
        let staging = gpu.create_buffer(
            &wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            },
            &during,
        )?;
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes);
        gpu.queue().submit([encoder.finish()]);
        let (sender, receiver) = mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                let _ = sender.send(result);
            });
        gpu.wait_idle(&during)?;
        let mapped = receiver
            .recv()
            .map_err(|e| e.to_string())
            .and_then(|result| result.map_err(|e| e.to_string()));
        if let Err(message) = mapped {
            return Err(Error::Gpu { during, message });
        }
        let data = match staging.slice(..).get_mapped_range() {
            Ok(view) => bytemuck::cast_slice(&view).to_vec(),
            Err(e) => {
                return Err(Error::Gpu {
                    during,
                    message: e.to_string(),
                });
            }
        };
        staging.unmap();
        Ok(data)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage buffer (`STORAGE | COPY_SRC | COPY_DST`), exactly `4 * len()` bytes long.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The name given at creation (used in labels and errors).
    pub fn name(&self) -> &str {
        &self.name
    }
}
