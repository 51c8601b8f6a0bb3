//! The GPU layer: the device and queue (opened here or borrowed from the host app), the
//! compute-kernel cache and the tensor type. Knows nothing about diffusion.

pub mod elementwise;
mod kernel;
mod tensor;
mod texels;
mod timer;

pub use kernel::{Binding, Kernel, KernelSpec, WORKGROUP_SIZE};
pub use tensor::GpuTensor;
pub use texels::TexelTable;
pub use timer::GpuTimer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// How to pick the adapter when [`Gpu::new`] opens its own device.
///
/// Unset fields fall back to wgpu's environment variables: `WGPU_BACKEND` (e.g. `vulkan`,
/// `metal`, `dx12`, `gl`) and `WGPU_ADAPTER_NAME` (a case-insensitive substring of the name).
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Backends to search; `None` reads `WGPU_BACKEND`, else all of them.
    pub backends: Option<wgpu::Backends>,
    /// Substring of the adapter's name; `None` reads `WGPU_ADAPTER_NAME`, else the default adapter.
    pub adapter_name: Option<String>,
    /// Preference between integrated and discrete GPUs when no name is given.
    pub power_preference: wgpu::PowerPreference,
}

/// A wgpu device and queue with this crate's compiled kernels.
///
/// Cheap to share: wrap it in an [`Arc`] and hand it to every sampler and model that should run
/// on the same device.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_info: Option<wgpu::AdapterInfo>,
    kernels: Mutex<HashMap<(&'static str, &'static str), Arc<Kernel>>>,
}

#[cfg(target_os = "linux")]
const NO_ADAPTER_HINT: &str = "; on Linux install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers` \
     (lavapipe, a software Vulkan that runs on the CPU)";
#[cfg(not(target_os = "linux"))]
const NO_ADAPTER_HINT: &str = "; install or update the GPU driver";

impl Gpu {
    /// Opens a device on the adapter chosen by `options` (blocking).
    pub fn new(options: &GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Opens a device on the adapter chosen by `options`.
    pub async fn new_async(options: &GpuOptions) -> Result<Self> {
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        if let Some(backends) = options.backends {
            descriptor.backends = backends;
        }
        let backends = descriptor.backends;
        let instance = wgpu::Instance::new(descriptor);
        let wanted_name = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|name| !name.is_empty());

        let adapter = match wanted_name {
            Some(name) => {
                let adapters = instance.enumerate_adapters(backends).await;
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let needle = name.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                    .ok_or_else(|| Error::NoAdapter {
                        reason: format!(
                            "none named like `{name}` on backends {backends:?} (found: {names:?})"
                        ),
                        hint: "",
                    })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: options.power_preference,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter {
                    reason: format!("none found on backends {backends:?} ({e})"),
                    hint: NO_ADAPTER_HINT,
                })?,
        };

        let info = adapter.get_info();
        // Optional: timestamps for `bench`'s per-kernel profile, where the adapter has them.
        let optional_features = adapter.features() & GpuTimer::FEATURES;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("diffusion-wgpu"),
                required_features: optional_features,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        log::info!(
            "adapter: {} ({:?}, {:?}, driver {} {})",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        if info.device_type == wgpu::DeviceType::Cpu {
            log::warn!(
                "adapter `{}` is a CPU (software) adapter: sampling will be slow",
                info.name
            );
        }
        Ok(Self {
            device,
            queue,
            adapter_info: Some(info),
            kernels: Mutex::default(),
        })
    }

    /// Wraps a device and queue the host app already has, so the sampler shares its renderer's
    /// device. The device needs no optional features.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self {
            device,
            queue,
            adapter_info: None,
            kernels: Mutex::default(),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description, when this `Gpu` opened the device itself.
    pub fn adapter_info(&self) -> Option<&wgpu::AdapterInfo> {
        self.adapter_info.as_ref()
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Fails with [`Error::TooLarge`] when a storage buffer of `bytes` for tensor `name` would
    /// exceed the device's `max_buffer_size` or `max_storage_buffer_binding_size`.
    pub fn check_storage_size(&self, name: &str, bytes: u64) -> Result<()> {
        let limits = self.limits();
        for (limit_name, limit) in [
            ("max_buffer_size", limits.max_buffer_size),
            (
                "max_storage_buffer_binding_size",
                limits.max_storage_buffer_binding_size,
            ),
        ] {
            if bytes > limit {
                return Err(Error::TooLarge {
                    tensor: name.to_string(),
                    bytes,
                    limit_name,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The compiled kernel for `spec`, built on first use and cached for the device's lifetime.
    pub fn kernel(&self, spec: &'static KernelSpec) -> Arc<Kernel> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        kernels
            .entry((spec.name, spec.entry_point))
            .or_insert_with(|| {
                Arc::new(Kernel::new(&self.device, spec, self.block_workgroup_size()))
            })
            .clone()
    }

    /// Invocations per workgroup of the register-blocked kernels (convolution, matmul), which
    /// declare `override WORKGROUP_SIZE`: 16 on CPU adapters (lavapipe runs a workgroup as
    /// SIMD-8 batches; the size hardly matters there), 64 elsewhere (whole warps and
    /// wavefronts; also for a device from the app, whose adapter is unknown).
    pub fn block_workgroup_size(&self) -> u32 {
        match &self.adapter_info {
            Some(info) if info.device_type == wgpu::DeviceType::Cpu => 16,
            _ => 64,
        }
    }

    /// Waits until all submitted work has finished.
    pub fn wait_idle(&self, during: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                during: during.to_string(),
                message: e.to_string(),
            })
    }
}
