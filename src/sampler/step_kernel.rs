//! Host side of shaders/step.wgsl: the per-step parameter table (uploaded once per run and
//! bound with a dynamic offset), the run's buffers and bind group, and the dispatches.

use std::sync::Arc;

use super::plan::{Clip, HistoryStep, LastSample, Plan, StepNoise, Stored};
use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, GpuTensor, Kernel, KernelSpec, WorkgroupSize};
use crate::model::Guidance;

const STEP_SOURCE: &str = include_str!("../../shaders/step.wgsl");
const STEP_BINDINGS: &[Binding] = &[
    Binding::DynamicUniform,
    Binding::StorageReadWrite,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
    Binding::StorageReadWrite,
    Binding::StorageReadWrite,
    Binding::StorageReadWrite,
];
static STEP: KernelSpec = KernelSpec {
    name: "step",
    source: STEP_SOURCE,
    entry_point: "step",
    bindings: STEP_BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};
static THRESHOLD: KernelSpec = KernelSpec {
    name: "step",
    source: STEP_SOURCE,
    entry_point: "threshold",
    bindings: STEP_BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// Every kernel of shaders/step.wgsl.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&STEP, &THRESHOLD];

/// Mirrors `StepParams` in shaders/step.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct StepParams {
    x0_from_sample: f32,
    x0_from_model: f32,
    eps_from_sample: f32,
    eps_from_model: f32,
    eps_from_x0: f32,
    prev_from_x0: f32,
    prev_from_eps: f32,
    prev_from_sample: f32,
    noise_std: f32,
    variance_mode: u32,
    min_log: f32,
    max_log: f32,
    clip_mode: u32,
    clip_range: f32,
    quantile_low: u32,
    quantile_high: u32,
    quantile_weight: f32,
    threshold_max: f32,
    sample_stride: u32,
    model_stride: u32,
    total: u32,
    write_x0: u32,
    history_mode: u32,
    history_write: u32,
    history_read0: u32,
    history_read1: u32,
    history_read2: u32,
    history_coef0: f32,
    history_coef1: f32,
    history_coef2: f32,
    last_mode: u32,
    last_slot: u32,
    corr_from_last: f32,
    corr_from_stored: f32,
    corr_coef0: f32,
    corr_coef1: f32,
    corr_coef2: f32,
    input_scale: f32,
    write_input: u32,
    inpaint: u32,
    known_image: f32,
    known_noise: f32,
    guidance_scale: f32,
    guidance_offset: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = crate::params_layout!(StepParams {
    x0_from_sample,
    x0_from_model,
    eps_from_sample,
    eps_from_model,
    eps_from_x0,
    prev_from_x0,
    prev_from_eps,
    prev_from_sample,
    noise_std,
    variance_mode,
    min_log,
    max_log,
    clip_mode,
    clip_range,
    quantile_low,
    quantile_high,
    quantile_weight,
    threshold_max,
    sample_stride,
    model_stride,
    total,
    write_x0,
    history_mode,
    history_write,
    history_read0,
    history_read1,
    history_read2,
    history_coef0,
    history_coef1,
    history_coef2,
    last_mode,
    last_slot,
    corr_from_last,
    corr_from_stored,
    corr_coef0,
    corr_coef1,
    corr_coef2,
    input_scale,
    write_input,
    inpaint,
    known_image,
    known_noise,
    guidance_scale,
    guidance_offset,
});

/// The buffers and bind group of one run: the sample (in place), the model's output (one or,
/// guided, two predictions per sample, combined by the step kernel as it reads them), this
/// step's noise, the per-sample thresholds, the x0 prediction, a multistep solver's history
/// ring, a sigma-space solver's scaled model input and the parameter table.
pub(crate) struct StepRun {
    step: Arc<Kernel>,
    threshold: Option<Arc<Kernel>>,
    /// The parameter table on the host, kept to switch the x0 output on and off.
    table: Vec<StepParams>,
    params: wgpu::Buffer,
    stride: u32,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
    batch: u32,
    /// How the model's predictions are combined (fixed for the run).
    guidance: Guidance,
    /// The model writes its prediction here ([P * B, Cm, H, W], P predictions per sample).
    pub model_output: GpuTensor,
    /// Each noisy step's noise is uploaded here before its submit.
    pub noise: GpuTensor,
    /// The clipped x0 prediction, written when the plan asks for it.
    pub x0: GpuTensor,
    /// A multistep solver's stored outputs; RePaint's image and mask.
    pub history: GpuTensor,
    /// The sample scaled for the model (`scale_model_input`), for sigma-space solvers: the
    /// step writes the next step's model input here.
    pub model_input: Option<GpuTensor>,
    /// Bound in place of `model_input` when there is none.
    _placeholder: GpuTensor,
}

impl StepRun {
    /// Allocates the run's buffers for `sample` ([B, C, H, W]) and a model writing
    /// `model_channels` channels with `guidance`, and uploads `plan`'s table.
    pub fn new(
        gpu: &Gpu,
        plan: &Plan,
        sample: &GpuTensor,
        model_channels: usize,
        guidance: Guidance,
        write_x0: bool,
    ) -> Result<Self> {
        let &[batch, channels, height, width] = sample.shape() else {
            return Err(Error::Shape {
                tensor: sample.name().to_string(),
                expected: "4 dimensions [B, C, H, W]".into(),
                found: format!("{:?}", sample.shape()),
            });
        };
        let expected_channels = if plan.learned_variance {
            2 * channels
        } else {
            channels
        };
        if model_channels != expected_channels {
            return Err(Error::Shape {
                tensor: "model output".into(),
                expected: format!(
                    "{expected_channels} channels for a {channels}-channel sample{}",
                    if plan.learned_variance {
                        " with a learned variance"
                    } else {
                        ""
                    }
                ),
                found: format!("{model_channels} channels"),
            });
        }
        let sample_stride = channels * height * width;
        let model_stride = model_channels * height * width;
        let predictions = guidance.predictions_per_sample();
        let total = sample.len();
        // Every index of the sample and of the model output fits a u32.
        let model_len = predictions * batch * model_stride;
        if total > u32::MAX as usize / 2
            || model_len > u32::MAX as usize
            || batch == 0
            || sample_stride == 0
        {
            return Err(Error::Shape {
                tensor: sample.name().to_string(),
                expected: "a non-empty sample of fewer than 2^31 elements, its model output \
                           fewer than 2^32"
                    .into(),
                found: format!("{:?}", sample.shape()),
            });
        }
        let limits = gpu.limits();
        if batch > limits.max_compute_workgroups_per_dimension as usize {
            return Err(Error::Shape {
                tensor: sample.name().to_string(),
                expected: format!(
                    "a batch of at most {}",
                    limits.max_compute_workgroups_per_dimension
                ),
                found: format!("{batch}"),
            });
        }

        let (guidance_scale, guidance_offset) = match guidance {
            Guidance::None => (0.0, 0),
            Guidance::ClassifierFree { scale } => (scale, (batch * model_stride) as u32),
        };
        let (clip_mode, clip_range, quantile, threshold_max) = match plan.clip {
            Clip::None => (0, 0.0, (0, 0, 0.0), 0.0),
            Clip::Clamp(range) => (1, range, (0, 0, 0.0), 0.0),
            Clip::Threshold { ratio, max } => (2, 0.0, quantile_ranks(ratio, sample_stride), max),
        };
        let table: Vec<StepParams> = plan
            .steps
            .iter()
            .map(|s| {
                let (variance_mode, noise_std, min_log, max_log) = match s.noise {
                    StepNoise::None => (0, 0.0, 0.0, 0.0),
                    StepNoise::Fixed(std) => (1, std, 0.0, 0.0),
                    StepNoise::Learned => (2, 0.0, 0.0, 0.0),
                    StepNoise::LearnedRange { min_log, max_log } => (3, 0.0, min_log, max_log),
                };
                let h = s.history.unwrap_or(HistoryStep {
                    stored: Stored::X0,
                    write_slot: 0,
                    read: [(0, 0.0, 0.0); 3],
                    last: None,
                });
                let history_mode = match (s.history, h.stored) {
                    (None, _) => 0,
                    (Some(_), Stored::X0) => 1,
                    (Some(_), Stored::Eps) => 2,
                };
                let (last_mode, last_slot, (corr_from_last, corr_from_stored)) = match h.last {
                    None => (0, 0, (0.0, 0.0)),
                    Some(LastSample {
                        slot,
                        correct: None,
                    }) => (1, slot, (0.0, 0.0)),
                    Some(LastSample {
                        slot,
                        correct: Some(c),
                    }) => (2, slot, c),
                };
                StepParams {
                    x0_from_sample: s.x0_from_sample,
                    x0_from_model: s.x0_from_model,
                    eps_from_sample: s.eps_from_sample,
                    eps_from_model: s.eps_from_model,
                    eps_from_x0: s.eps_from_x0,
                    prev_from_x0: s.prev_from_x0,
                    prev_from_eps: s.prev_from_eps,
                    prev_from_sample: s.prev_from_sample,
                    noise_std,
                    variance_mode,
                    min_log,
                    max_log,
                    clip_mode,
                    clip_range,
                    quantile_low: quantile.0,
                    quantile_high: quantile.1,
                    quantile_weight: quantile.2,
                    threshold_max,
                    sample_stride: sample_stride as u32,
                    model_stride: model_stride as u32,
                    total: total as u32,
                    write_x0: u32::from(write_x0),
                    history_mode,
                    history_write: h.write_slot,
                    history_read0: h.read[0].0,
                    history_read1: h.read[1].0,
                    history_read2: h.read[2].0,
                    history_coef0: h.read[0].1,
                    history_coef1: h.read[1].1,
                    history_coef2: h.read[2].1,
                    last_mode,
                    last_slot,
                    corr_from_last,
                    corr_from_stored,
                    corr_coef0: h.read[0].2,
                    corr_coef1: h.read[1].2,
                    corr_coef2: h.read[2].2,
                    input_scale: s.next_input_scale.unwrap_or(0.0),
                    write_input: u32::from(s.next_input_scale.is_some()),
                    inpaint: u32::from(s.known.is_some()),
                    known_image: s.known.map_or(0.0, |k| k[0]),
                    known_noise: s.known.map_or(0.0, |k| k[1]),
                    guidance_scale,
                    guidance_offset,
                }
            })
            .collect();

        let entry_size = std::mem::size_of::<StepParams>() as u32;
        let stride = entry_size.next_multiple_of(limits.min_uniform_buffer_offset_alignment);
        let device = gpu.device();
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step params"),
            size: u64::from(stride) * table.len().max(1) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        upload_table(gpu, &params, &table, stride);

        let model_output = GpuTensor::zeros(
            gpu,
            &[predictions * batch, model_channels, height, width],
            "model output",
        )?;
        let noise = GpuTensor::zeros(gpu, sample.shape(), "step noise")?;
        let x0 = GpuTensor::zeros(gpu, sample.shape(), "predicted x0")?;
        let thresholds = GpuTensor::zeros(gpu, &[batch], "thresholds")?;
        // One-step methods bind a one-element placeholder.
        let history = match plan.history_slots {
            0 => GpuTensor::zeros(gpu, &[1], "history")?,
            slots => GpuTensor::zeros(gpu, &[slots, batch, channels, height, width], "history")?,
        };
        let model_input = if plan.first_input_scale.is_some() {
            Some(GpuTensor::zeros(gpu, sample.shape(), "model input")?)
        } else {
            None
        };
        let placeholder = GpuTensor::zeros(gpu, &[1], "model input placeholder")?;
        let input_binding = model_input.as_ref().unwrap_or(&placeholder);
        let step = gpu.kernel(&STEP);
        let bind_group = step.bind_group(
            device,
            &[
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: 0,
                    size: std::num::NonZeroU64::new(u64::from(entry_size)),
                }),
                sample.buffer().as_entire_binding(),
                model_output.buffer().as_entire_binding(),
                noise.buffer().as_entire_binding(),
                thresholds.buffer().as_entire_binding(),
                x0.buffer().as_entire_binding(),
                history.buffer().as_entire_binding(),
                input_binding.buffer().as_entire_binding(),
            ],
        );
        Ok(Self {
            step,
            threshold: matches!(plan.clip, Clip::Threshold { .. }).then(|| gpu.kernel(&THRESHOLD)),
            table,
            params,
            stride,
            bind_group,
            grid: Kernel::grid_for(total, limits.max_compute_workgroups_per_dimension),
            batch: batch as u32,
            guidance,
            model_output,
            noise,
            x0,
            history,
            model_input,
            _placeholder: placeholder,
        })
    }

    /// How the model's predictions are combined.
    pub fn guidance(&self) -> Guidance {
        self.guidance
    }

    /// Switches the x0 output on or off for the steps submitted from now on.
    pub fn set_write_x0(&mut self, gpu: &Gpu, write_x0: bool) {
        for entry in &mut self.table {
            entry.write_x0 = u32::from(write_x0);
        }
        upload_table(gpu, &self.params, &self.table, self.stride);
    }

    /// Whether the steps write the x0 prediction.
    pub fn writes_x0(&self) -> bool {
        self.table.first().is_some_and(|entry| entry.write_x0 != 0)
    }

    /// Records step `index` of the plan (its threshold pass first, when thresholding).
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, index: usize) {
        let offset = [index as u32 * self.stride];
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("denoising step"),
            timestamp_writes: None,
        });
        if let Some(threshold) = &self.threshold {
            threshold.dispatch(&mut pass, &self.bind_group, &offset, [self.batch, 1, 1]);
        }
        self.step
            .dispatch(&mut pass, &self.bind_group, &offset, self.grid);
    }
}

/// Queues the upload of `table`, one entry every `stride` bytes.
fn upload_table(gpu: &Gpu, params: &wgpu::Buffer, table: &[StepParams], stride: u32) {
    let entry_size = std::mem::size_of::<StepParams>();
    let mut bytes = vec![0u8; stride as usize * table.len().max(1)];
    for (i, entry) in table.iter().enumerate() {
        let start = i * stride as usize;
        bytes[start..start + entry_size].copy_from_slice(bytemuck::bytes_of(entry));
    }
    gpu.queue().write_buffer(params, 0, &bytes);
}

/// torch.quantile's linear interpolation: the ranks below and above `ratio * (n - 1)` (computed
/// in f32, as torch does for a float32 input) and the weight between them.
fn quantile_ranks(ratio: f32, n: usize) -> (u32, u32, f32) {
    let rank = ratio * (n - 1) as f32;
    let low = rank.floor();
    (low as u32, rank.ceil() as u32, rank - low)
}
