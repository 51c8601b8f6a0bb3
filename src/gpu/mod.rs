//! The GPU layer: the device and queue (opened here or borrowed from the host app), the
//! compute-kernel cache and the tensor type. Knows nothing about diffusion.

mod autotune_cache;
mod cooperative_matrix;
mod device_errors;
mod kernel;
mod limits;
mod pipeline_cache;
mod precision;
#[cfg(test)]
mod spec_check;
mod tensor;
mod texels;
mod timer;
mod tuning;
mod variants;

pub use autotune_cache::AutotuneReport;
pub use cooperative_matrix::{CoopMatrixConfig, CooperativeMatrix, REQUIRE_COOPERATIVE_MATRIX_ENV};
pub use kernel::{
    Binding, Kernel, KernelSpec, ParamsLayout, SUBGROUP_SIZE_OVERRIDE, WORKGROUP_SIZE,
    WORKGROUP_SIZE_OVERRIDE, WorkgroupSize,
};
pub use pipeline_cache::default_dir as default_pipeline_cache_dir;
pub use precision::Precision;
pub use tensor::GpuTensor;
pub use texels::TexelTable;
pub use timer::GpuTimer;
pub use tuning::{Autotune, BlockSize, ConvTiles, GemmTile, TUNING_ENV, TiledChoice, Tuning};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use autotune_cache::AutotuneCache;
use device_errors::{DeviceErrors, lock, one_line};
use pipeline_cache::PipelineCacheFile;

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
    /// The limits to open the device with; `None` asks for the adapter's own (its maximum).
    /// `Some(wgpu::Limits::default())` runs under WebGPU's defaults, as a browser would give.
    pub limits: Option<wgpu::Limits>,
    /// Where to keep compiled pipelines between runs, where the backend has a pipeline cache
    /// (Vulkan); `None` keeps none. [`default_pipeline_cache_dir`] is the platform's cache
    /// directory. The cache is saved by [`Gpu::save_pipeline_cache`] and when the `Gpu` is
    /// dropped; a cache that cannot be read or written is logged as a warning, never an error.
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Whether the tiled convolutions' tiles and split-K factors are measured per layer shape
    /// on this adapter ([`Autotune`]; default [`Autotune::Off`], the shape rule).
    pub autotune: Autotune,
    /// Where to keep the [`Autotune`] choices between runs (a small text file per adapter,
    /// driver and mode); `None` keeps them for the device's lifetime only. The platform's
    /// cache directory is [`default_pipeline_cache_dir`].
    pub autotune_cache_dir: Option<PathBuf>,
    /// The convolutions' precision; [`Precision::Mixed`] requests `SHADER_F16` and fails with
    /// [`Error::MissingFeature`] on an adapter without it.
    pub precision: Precision,
    /// Whether [`Precision::Mixed`] runs its convolutions on the adapter's cooperative
    /// matrices (tensor cores) where it has a usable configuration ([`CooperativeMatrix`]).
    pub cooperative_matrix: CooperativeMatrix,
}

/// A wgpu device and queue with this crate's compiled kernels.
///
/// Cheap to share: wrap it in an [`Arc`] and hand it to every sampler and model that should run
/// on the same device.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_info: Option<wgpu::AdapterInfo>,
    tuning: Tuning,
    precision: Precision,
    /// The cooperative matrices the mixed-precision convolutions run on, if any.
    coop: Option<CoopMatrixConfig>,
    /// The cooperative matrices mixed precision would run on, whether or not it does.
    coop_available: Option<CoopMatrixConfig>,
    kernels: Mutex<HashMap<(&'static str, &'static str), Arc<Kernel>>>,
    errors: Arc<DeviceErrors>,
    pipeline_cache: Option<PipelineCacheFile>,
    /// The autotune choices (`None`: [`Autotune::Off`]) and where they are kept.
    autotune: Option<AutotuneCache>,
    autotune_dir: Option<PathBuf>,
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

    /// Opens a device on the adapter chosen by `options`, with the adapter's [`Tuning`] or
    /// the one [`TUNING_ENV`] forces (read once, here; an invalid value is an error).
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
        // Optional: timestamps for `bench`'s per-kernel profile where the adapter has them, and
        // a pipeline cache where one was asked for and the backend has one.
        let mut wanted_features = GpuTimer::FEATURES;
        if options.pipeline_cache_dir.is_some() {
            wanted_features |= PipelineCacheFile::FEATURES;
        }
        let optional_features = adapter.features() & wanted_features;
        options
            .precision
            .check_features(&info.name, adapter.features())?;
        let required_limits = options.limits.clone().unwrap_or_else(|| adapter.limits());
        let coop_available = CoopMatrixConfig::for_adapter(&adapter, &required_limits);
        let coop = coop_available.filter(|_| {
            options.precision == Precision::Mixed
                && options.cooperative_matrix == CooperativeMatrix::Auto
        });
        let coop_features = match coop {
            Some(_) => CoopMatrixConfig::FEATURES,
            None => wgpu::Features::empty(),
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("diffusion-wgpu"),
                required_features: optional_features
                    | options.precision.required_features()
                    | coop_features,
                required_limits,
                // SAFETY: wgpu's experimental features are enabled only for the cooperative
                // matrices, which only the tiled convolution's cooperative-matrix body uses
                // (held to the f64 convolution of its f16 operands wherever an adapter has
                // them: src/nn/conv/tests.rs, tests/mixed_precision.rs).
                experimental_features: match coop {
                    Some(_) => unsafe { wgpu::ExperimentalFeatures::enabled() },
                    None => wgpu::ExperimentalFeatures::disabled(),
                },
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
        let tuning = match Tuning::from_env()? {
            Some(forced) => {
                log::info!("{TUNING_ENV}: kernel shapes {forced:?}");
                forced
            }
            None => Tuning::for_device_type(info.device_type),
        };
        if options.precision != Precision::F32 {
            log::info!("precision {}", options.precision.describe());
        }
        if let Some(config) = coop {
            log::info!("cooperative matrices: {}", config.describe());
        }
        let errors = DeviceErrors::watch(&device);
        let pipeline_cache = options
            .pipeline_cache_dir
            .as_deref()
            .and_then(|dir| PipelineCacheFile::open(&device, &info, dir));
        let gpu = Self {
            device,
            queue,
            tuning,
            precision: options.precision,
            coop,
            coop_available,
            adapter_info: Some(info),
            kernels: Mutex::default(),
            errors,
            pipeline_cache,
            autotune: None,
            autotune_dir: None,
        };
        Ok(gpu.with_autotune(options.autotune, options.autotune_cache_dir.clone()))
    }

    /// Wraps a device and queue the host app already has, so the sampler shares its renderer's
    /// device. The device needs no optional features.
    ///
    /// The app's uncaptured-error handler and device-lost callback are left in place, so errors
    /// outside this crate's own error scopes reach the app's handlers rather than
    /// [`Gpu::check`]; a device from [`Gpu::new`] reports them through `check` instead.
    ///
    /// The adapter is unknown here, so the kernels get the GPU [`Tuning`] ([`TUNING_ENV`] is
    /// not read: the app chooses); on a CPU adapter
    /// (lavapipe) pass the adapter's type for the much faster CPU shapes:
    /// `Gpu::from_device(device, queue).with_tuning(Tuning::for_device_type(info.device_type))`.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self {
            device,
            queue,
            adapter_info: None,
            tuning: Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu),
            precision: Precision::F32,
            coop: None,
            coop_available: None,
            kernels: Mutex::default(),
            errors: Arc::default(),
            pipeline_cache: None,
            autotune: None,
            autotune_dir: None,
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

    /// The bytes of an f32 tensor of `shape` (at least 4: empty tensors get a one-value
    /// buffer), after checking them with [`Gpu::check_storage_size`]. A shape whose size
    /// overflows is an [`Error::TooLarge`] too. Nothing is allocated, so a caller can check a
    /// shape before preparing its data.
    pub fn check_tensor_shape(&self, name: &str, shape: &[usize]) -> Result<u64> {
        let bytes = shape
            .iter()
            .try_fold(4u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
            .map(|bytes| bytes.max(4));
        match bytes {
            Some(bytes) => self.check_storage_size(name, bytes).map(|()| bytes),
            None => Err(Error::TooLarge {
                tensor: format!("{name} {shape:?}"),
                bytes: u64::MAX,
                limit_name: "max_buffer_size",
                limit: self.limits().max_buffer_size,
            }),
        }
    }

    /// The compiled kernel for `spec`, built on first use and cached for the device's lifetime.
    ///
    /// A kernel whose bindings exceed the device's limits is still returned (it fails to run),
    /// and the next [`Gpu::check`] returns an [`Error::OverLimit`] naming the limit.
    pub fn kernel(&self, spec: &'static KernelSpec) -> Arc<Kernel> {
        let mut kernels = lock(&self.kernels);
        kernels
            .entry((spec.name, spec.entry_point))
            .or_insert_with(|| {
                if let Err(e) = limits::check_bindings(spec, &self.device.limits()) {
                    log::error!("{e}");
                    lock(&self.errors.over_limit).get_or_insert(e);
                }
                let cache = self.pipeline_cache.as_ref();
                let start = std::time::Instant::now();
                let kernel = Kernel::new(
                    &self.device,
                    spec,
                    self.tuning.block_workgroup_size,
                    self.coop.map_or(0, |config| config.subgroup_size),
                    cache.map(PipelineCacheFile::for_new_pipeline),
                );
                // Pipeline creation compiles the shader (on GL it links the program).
                log::debug!(
                    "kernel {}.{}: pipeline created in {:.0} ms",
                    spec.name,
                    spec.entry_point,
                    start.elapsed().as_secs_f64() * 1e3
                );
                Arc::new(kernel)
            })
            .clone()
    }

    /// Writes the pipeline cache (see [`GpuOptions::pipeline_cache_dir`]) when kernels were
    /// compiled since it was loaded or last saved; also done when the `Gpu` is dropped.
    /// Failures are logged as warnings.
    pub fn save_pipeline_cache(&self) {
        if let Some(cache) = &self.pipeline_cache {
            cache.save();
        }
    }

    /// Whether kernels are compiled with a pipeline cache kept on disk.
    pub fn has_pipeline_cache(&self) -> bool {
        self.pipeline_cache.is_some()
    }

    /// Waits until all submitted work has finished, then [`check`](Gpu::check)s for errors.
    pub fn wait_idle(&self, during: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                during: during.to_string(),
                message: e.to_string(),
            })?;
        self.check(during)
    }

    /// Fails with [`Error::Gpu`] once the device is lost (every later call fails too), with
    /// [`Error::OverLimit`] when a kernel created since the last check exceeds the device's
    /// limits (see [`Gpu::kernel`]), or with [`Error::Gpu`] when wgpu reported an error outside
    /// an error scope since the last check (a validation error, an out-of-memory in a
    /// submission). `during` says what the crate was doing.
    pub fn check(&self, during: &str) -> Result<()> {
        let error = |message: String| Error::Gpu {
            during: during.to_string(),
            message,
        };
        self.check_lost(during)?;
        if let Some(over_limit) = lock(&self.errors.over_limit).take() {
            // wgpu's own validation errors about the same kernel follow from it.
            lock(&self.errors.uncaptured).take();
            return Err(over_limit);
        }
        match lock(&self.errors.uncaptured).take() {
            Some(message) => Err(error(message)),
            None => Ok(()),
        }
    }

    /// Creates a buffer, returning an out-of-memory or validation failure (or the device's
    /// loss) as [`Error::Gpu`] naming `during` instead of leaving it to the uncaptured-error
    /// handler.
    pub(crate) fn create_buffer(
        &self,
        descriptor: &wgpu::BufferDescriptor<'_>,
        during: &str,
    ) -> Result<wgpu::Buffer> {
        self.scoped(during, |device| device.create_buffer(descriptor))
    }

    /// Creates a texture, with failures reported as by [`Gpu::create_buffer`].
    pub(crate) fn create_texture(
        &self,
        descriptor: &wgpu::TextureDescriptor<'_>,
        during: &str,
    ) -> Result<wgpu::Texture> {
        self.scoped(during, |device| device.create_texture(descriptor))
    }

    /// Runs `create` inside out-of-memory and validation error scopes.
    fn scoped<T>(&self, during: &str, create: impl FnOnce(&wgpu::Device) -> T) -> Result<T> {
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let created = create(&self.device);
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(out_of_memory.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(Error::Gpu {
                during: during.to_string(),
                message: one_line(&e.to_string()),
            });
        }
        self.check_lost(during)?;
        Ok(created)
    }

    /// Fails with [`Error::Gpu`] once the device is lost.
    fn check_lost(&self, during: &str) -> Result<()> {
        match lock(&self.errors.lost).as_ref() {
            Some(lost) => Err(Error::Gpu {
                during: during.to_string(),
                message: lost.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.save_pipeline_cache();
    }
}
