//! # diffusion-wgpu
//!
//! Diffusion sampling (DDPM and DDIM, following Hugging Face diffusers' schedulers) on any GPU
//! through wgpu compute shaders. The host owns the noise schedule and the loop; every step's
//! elementwise math runs in WGSL over GPU buffers, and the sample stays on the GPU.
//!
//! ```no_run
//! use std::sync::Arc;
//! use diffusion_wgpu::{Gpu, GpuOptions, LinearNoiseModel, NoiseSource, Sampler, SamplerSettings, SchedulerConfig};
//!
//! let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
//! let sampler = Sampler::new(gpu, SchedulerConfig::default())?;
//! let model = LinearNoiseModel::new(0.1);
//! let x0 = sampler.sample(&model, [2, 3, 8, 8], &SamplerSettings::ddim(50, 0.0), NoiseSource::Seed(7), &mut |_| {})?;
//! assert_eq!(x0.len(), 2 * 3 * 8 * 8);
//! # Ok::<(), diffusion_wgpu::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
mod config_json;
pub mod error;
pub mod gpu;
pub mod image;
pub mod io;
pub mod model;
pub mod nn;
pub mod pipeline;
pub mod sampler;
pub mod schedule;
pub mod text;

pub use error::{Error, Result};
pub use gpu::{
    Autotune, BlockSize, ConvTiles, CoopMatrixConfig, CooperativeMatrix, GemmTile, Gpu, GpuOptions,
    GpuTensor, Precision, Tuning,
};
pub use image::{GridImage, GridLayout};
pub use model::unet::{Unet, UnetConfig};
pub use model::{Conditioning, Guidance, LinearNoiseModel, NoiseModel};
pub use pipeline::{TextToImage, TextToImageRun, TextToImageSettings};
pub use sampler::{
    DpmAlgorithm, DpmSolverOptions, DpmSolverType, Method, NoiseSource, RePaintOptions, Sampler,
    SamplerSettings, SamplingRun, SchedulerFile, StepOutput, StepProgress, UniPcOptions,
    UniPcSolverType,
};
pub use schedule::{
    BetaSchedule, FinalSigma, PredictionType, PrevTimestep, Schedule, SchedulerConfig,
    SigmaSpacing, SigmaTable, TimestepSpacing, VarianceType,
};
pub use text::{ClipTextConfig, ClipTokenizer, PipelineFiles, VaeConfig};
