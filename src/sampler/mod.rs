//! DDPM and DDIM sampling: the host loop that calls the model and dispatches the fused step
//! kernel, with the sample on the GPU from x_T to x_0.

mod noise;
mod plan;
mod step_kernel;

pub use noise::NoiseSource;
pub use plan::{Method, SamplerSettings};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::NoiseModel;
use crate::schedule::{Schedule, SchedulerConfig};
use noise::NoiseStream;
use step_kernel::StepRun;

/// Where a run is, passed to the progress callback after each step is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// 0-based index of the step just submitted.
    pub index: usize,
    /// Number of steps in the run.
    pub total: usize,
    /// The step's timestep.
    pub timestep: usize,
}

/// The result of one [`Sampler::step`]: diffusers' `prev_sample` and `pred_original_sample`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// x_{t-1}.
    pub prev_sample: Vec<f32>,
    /// The x0 prediction after clipping or thresholding.
    pub pred_original_sample: Vec<f32>,
}

/// A DDPM/DDIM sampler for one scheduler configuration on one device.
pub struct Sampler {
    gpu: Arc<Gpu>,
    schedule: Schedule,
}

impl Sampler {
    /// A sampler for `config` (validated here) on `gpu`.
    pub fn new(gpu: Arc<Gpu>, config: SchedulerConfig) -> Result<Self> {
        Ok(Self {
            gpu,
            schedule: Schedule::new(config)?,
        })
    }

    /// The schedule's tables.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The timesteps `settings` visit, in order.
    pub fn timesteps(&self, settings: &SamplerSettings) -> Result<Vec<usize>> {
        let plan = plan::plan(&self.schedule, settings)?;
        Ok(plan.steps.iter().map(|s| s.timestep).collect())
    }

    /// Runs a whole sampling loop from x_T to x_0 for a batch of `shape` ([B, C, H, W]) and
    /// reads the result back once.
    pub fn sample(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<Vec<f32>> {
        self.sample_gpu(model, shape, settings, noise, progress)?
            .read(&self.gpu)
    }

    /// Runs a whole sampling loop and returns x_0 in a GPU tensor, with no readback.
    pub fn sample_gpu(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<GpuTensor> {
        let gpu = &*self.gpu;
        let plan = plan::plan(&self.schedule, settings)?;
        let len = shape.iter().product();
        let any_noise = plan.steps.iter().any(|s| s.adds_noise());
        let (initial, mut stream) = NoiseStream::start(noise, len, plan.steps.len(), any_noise)?;
        let sample = GpuTensor::from_slice(gpu, &shape, &initial, "sample")?;
        let model_channels = model.output_channels(shape[1]);
        let run = StepRun::new(gpu, &plan, &sample, model_channels, false)?;
        let mut timesteps = vec![0u32; shape[0]];
        for (index, step) in plan.steps.iter().enumerate() {
            if step.adds_noise() {
                run.noise.write(gpu, &stream.step_noise(index))?;
            }
            timesteps.fill(step.timestep as u32);
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            model.predict(gpu, &mut encoder, &sample, &timesteps, &run.model_output)?;
            run.record(&mut encoder, index);
            gpu.queue().submit([encoder.finish()]);
            progress(StepProgress {
                index,
                total: plan.steps.len(),
                timestep: step.timestep,
            });
        }
        Ok(sample)
    }

    /// One step on host data, like diffusers' `scheduler.step(model_output, timestep, sample)`
    /// after `set_timesteps`: `timestep` must be one of `settings`' timesteps; `noise` is the
    /// step's `variance_noise` (needed when the step adds noise).
    pub fn step(
        &self,
        settings: &SamplerSettings,
        timestep: usize,
        shape: [usize; 4],
        sample: &[f32],
        model_output: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput> {
        let gpu = &*self.gpu;
        let plan = plan::plan(&self.schedule, settings)?;
        let index = plan
            .steps
            .iter()
            .position(|s| s.timestep == timestep)
            .ok_or_else(|| Error::InvalidSetting {
                setting: "timestep",
                message: format!("{timestep} is not one of this run's timesteps"),
            })?;
        let sample = GpuTensor::from_slice(gpu, &shape, sample, "sample")?;
        let model_channels = model_output.len() / (shape[0] * shape[2] * shape[3]).max(1);
        let run = StepRun::new(gpu, &plan, &sample, model_channels, true)?;
        run.model_output.write(gpu, model_output)?;
        if plan.steps[index].adds_noise() {
            let noise = noise.ok_or_else(|| Error::InvalidSetting {
                setting: "noise",
                message: format!("the step at timestep {timestep} adds noise but none was given"),
            })?;
            run.noise.write(gpu, noise)?;
        }
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        run.record(&mut encoder, index);
        gpu.queue().submit([encoder.finish()]);
        Ok(StepOutput {
            prev_sample: sample.read(gpu)?,
            pred_original_sample: run.x0.read(gpu)?,
        })
    }
}
