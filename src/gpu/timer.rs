//! GPU timestamps written between the dispatches of a compute pass, for profiling. Needs the
//! device features `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_PASSES`, which [`Gpu::new`]
//! asks for whenever the adapter has them.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};

/// A set of timestamp queries and the buffers that bring them back to the host.
pub struct GpuTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    capacity: u32,
}

impl GpuTimer {
    /// The features a device needs for timestamps inside compute passes.
    pub const FEATURES: wgpu::Features =
        wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

    /// A timer with room for `capacity` timestamps, or `None` when the device lacks
    /// [`GpuTimer::FEATURES`].
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<Option<Self>> {
        if !gpu.device().features().contains(Self::FEATURES) {
            return Ok(None);
        }
        let capacity = capacity.max(2);
        let max = wgpu::QUERY_SET_MAX_QUERIES;
        if capacity > max {
            return Err(Error::TooLarge {
                tensor: "timestamp queries".into(),
                bytes: u64::from(capacity) * 8,
                limit_name: "QUERY_SET_MAX_QUERIES (x 8 bytes)",
                limit: u64::from(max) * 8,
            });
        }
        let device = gpu.device();
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profiling timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: capacity,
        });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: u64::from(capacity) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Some(Self {
            queries,
            resolved,
            capacity,
        }))
    }

    /// Number of timestamps the timer holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Writes timestamp `index` at this point of `pass`.
    pub fn stamp(&self, pass: &mut wgpu::ComputePass<'_>, index: u32) {
        pass.write_timestamp(&self.queries, index);
    }

    /// Submits the resolve of the first `count` timestamps and returns the `count - 1`
    /// intervals between consecutive ones, in seconds (waits for the GPU).
    pub fn intervals(&self, gpu: &Gpu, count: u32) -> Result<Vec<f64>> {
        let count = count.clamp(2, self.capacity);
        // Read back through a tensor of 2 * count f32 words, then reinterpret as u64 ticks.
        let staging = GpuTensor::zeros(gpu, &[2 * count as usize], "timestamps")?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, staging.buffer(), 0, u64::from(count) * 8);
        gpu.queue().submit([encoder.finish()]);
        let words = staging.read(gpu)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&words);
        let period = f64::from(gpu.queue().get_timestamp_period()) * 1e-9;
        Ok(ticks
            .windows(2)
            .map(|pair| pair[1].saturating_sub(pair[0]) as f64 * period)
            .collect())
    }
}
