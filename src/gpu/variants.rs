//! How this device's kernels are chosen: the [`Tuning`] (kernel set and shapes), the
//! [`Autotune`] state of the tiled convolutions, and the convolutions' [`Precision`].

use std::path::PathBuf;
use std::sync::Mutex;

use super::autotune_cache::{AutotuneCache, AutotuneReport};
use super::{Autotune, Gpu, Precision, Tuning};
use crate::error::Result;

impl Gpu {
    /// The kernel shapes chosen for this device's adapter.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Replaces the kernel shapes (e.g. to run a GPU's variants on a CPU adapter in tests).
    /// Kernels compiled for the old shapes are dropped, so they are rebuilt with the new ones.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self.kernels = Mutex::default();
        let mode = self.autotune();
        let dir = self.autotune_dir.take();
        self.with_autotune(mode, dir)
    }

    /// Sets the [`Autotune`] mode and where its choices are kept (see
    /// [`GpuOptions::autotune_cache_dir`](super::GpuOptions::autotune_cache_dir)), dropping the choices made so far; the file is
    /// looked up for this adapter, mode, [`Tuning`] and [`Precision`], so call it after
    /// [`Gpu::with_tuning`] and [`Gpu::with_precision`] or let them carry the mode over.
    pub fn with_autotune(mut self, mode: Autotune, cache_dir: Option<PathBuf>) -> Self {
        let adapter = match &self.adapter_info {
            Some(info) => format!(
                "{}; driver {} {}; {:?}; {:?}",
                info.name, info.driver, info.driver_info, info.backend, info.device_type
            ),
            None => "(app-provided device)".to_string(),
        };
        self.autotune = (mode != Autotune::Off).then(|| {
            AutotuneCache::open(
                mode,
                &adapter,
                (&self.tuning, self.precision, self.coop),
                &self.device.limits(),
                cache_dir.as_deref(),
            )
        });
        self.autotune_dir = cache_dir;
        self
    }

    /// The [`Autotune`] mode.
    pub fn autotune(&self) -> Autotune {
        self.autotune
            .as_ref()
            .map_or(Autotune::Off, AutotuneCache::mode)
    }

    /// What autotuning chose so far (`None` with [`Autotune::Off`]).
    pub fn autotune_report(&self) -> Option<AutotuneReport> {
        self.autotune.as_ref().map(AutotuneCache::report)
    }

    /// The autotune state, for the layers that are tuned (`None` with [`Autotune::Off`]).
    pub(crate) fn autotune_cache(&self) -> Option<&AutotuneCache> {
        self.autotune.as_ref()
    }

    /// The convolutions' precision (see [`GpuOptions::precision`](super::GpuOptions::precision)).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The cooperative matrices the [`Precision::Mixed`] convolutions run on: `Some` on a
    /// device [`Gpu::new`] opened under mixed precision on an adapter with a usable
    /// configuration ([`CooperativeMatrix`](super::CooperativeMatrix)), else `None` (always
    /// for [`Gpu::from_device`]).
    pub fn cooperative_matrix(&self) -> Option<super::CoopMatrixConfig> {
        self.coop
    }

    /// The cooperative matrices [`Precision::Mixed`] would run on on this adapter, whether or
    /// not this device uses them (`None` for [`Gpu::from_device`]). `diffusion-wgpu info`
    /// prints it.
    pub fn cooperative_matrix_available(&self) -> Option<super::CoopMatrixConfig> {
        self.coop_available
    }

    /// Sets the convolutions' precision of a device from [`Gpu::from_device`] (created with
    /// the features [`Precision::required_features`] lists), before any model loads on it.
    /// Fails with [`Error::MissingFeature`](crate::Error::MissingFeature) when the device lacks one.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        let adapter = self
            .adapter_info
            .as_ref()
            .map_or("(app-provided device)", |info| info.name.as_str());
        precision.check_features(adapter, self.device.features())?;
        log::info!("precision {}", precision.describe());
        self.precision = precision;
        // The autotune choices are kept per precision.
        let mode = self.autotune();
        let dir = self.autotune_dir.take();
        Ok(self.with_autotune(mode, dir))
    }
}
