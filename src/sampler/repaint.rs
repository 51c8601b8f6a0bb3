//! RePaint inpainting (Lugmayr et al. 2022) with an unconditional model, as diffusers'
//! `RePaintScheduler` and `RePaintPipeline`: DDIM-like steps whose known region is the image
//! noised to the step's level, with jumps back up the chain (`undo_step`) to harmonize the two
//! regions. Both kinds of step are one dispatch of the step kernel; their scalars are computed
//! here in float32, in diffusers' order.

use super::plan::{Clip, Plan, StepCoefficients, StepNoise};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// RePaint's options (the scheduler's `eta` and the pipeline's jump arguments), with
/// diffusers' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RePaintOptions {
    /// DDIM's noise weight, in [0, 1].
    pub eta: f32,
    /// Steps taken back up the chain per jump (`jump_length`, "j" in the paper).
    pub jump_length: usize,
    /// How many times each jump is made (`jump_n_sample`, "r" in the paper).
    pub jump_n_sample: usize,
}

impl Default for RePaintOptions {
    fn default() -> Self {
        Self {
            eta: 0.0,
            jump_length: 10,
            jump_n_sample: 10,
        }
    }
}

/// What one entry of a RePaint run does besides the kernel dispatch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// A denoising step: the model's prediction, then one noise draw.
    Denoise,
    /// A jump up one step: no model; the step's noise is `sum_k c_k z_k` over these
    /// coefficients, one fresh draw `z_k` each.
    Undo(Vec<f32>),
}

/// diffusers' `RePaintScheduler.set_timesteps`: the step indices, down with jumps back up.
fn timesteps(t: usize, n: usize, jump_length: usize, jump_n_sample: usize) -> Vec<usize> {
    let mut jumps = std::collections::HashMap::new();
    let mut j = 0;
    while j + jump_length < n {
        jumps.insert(j, jump_n_sample - 1);
        j += jump_length;
    }
    let mut list = Vec::new();
    let mut i = n;
    while i >= 1 {
        i -= 1;
        list.push(i);
        if let Some(left) = jumps.get_mut(&i).filter(|left| **left > 0) {
            *left -= 1;
            for _ in 0..jump_length {
                i += 1;
                list.push(i);
            }
        }
    }
    list.into_iter().map(|i| i * (t / n)).collect()
}

/// The plan (one kernel entry per timestep of the run) and what each entry needs.
pub(crate) fn plan(
    schedule: &Schedule,
    num_inference_steps: usize,
    options: &RePaintOptions,
) -> Result<(Plan, Vec<Entry>)> {
    let config = schedule.config();
    let t = config.num_train_timesteps;
    let n = num_inference_steps.min(t);
    let invalid = |setting, message| Error::InvalidSetting { setting, message };
    if n == 0 {
        return Err(invalid("num_inference_steps", "0 steps".into()));
    }
    if !(0.0..=1.0).contains(&options.eta) {
        return Err(invalid("eta", format!("{} is not in [0, 1]", options.eta)));
    }
    if options.jump_length == 0 || options.jump_n_sample == 0 {
        return Err(invalid(
            "jump_length / jump_n_sample",
            format!(
                "{} / {}: both must be at least 1",
                options.jump_length, options.jump_n_sample
            ),
        ));
    }
    let ratio = t / n;
    let alphas = schedule.alphas_cumprod();
    let betas = schedule.betas();
    let list = timesteps(t, n, options.jump_length, options.jump_n_sample);
    let mut steps = Vec::with_capacity(list.len());
    let mut entries = Vec::with_capacity(list.len());
    let mut last = list[0] + 1;
    for &step in &list {
        let mut coefficients = StepCoefficients {
            timestep: step,
            x0_from_sample: 0.0,
            x0_from_model: 0.0,
            eps_from_sample: 0.0,
            eps_from_model: 0.0,
            eps_from_x0: 0.0,
            prev_from_x0: 0.0,
            prev_from_eps: 0.0,
            prev_from_sample: 0.0,
            noise: StepNoise::Fixed(1.0),
            history: None,
            next_input_scale: None,
            known: None,
        };
        if step < last {
            let a_t = alphas[step] as f32;
            let a_prev = step.checked_sub(ratio).map_or(1.0, |p| alphas[p] as f32);
            let beta_t = 1.0 - a_t;
            let variance = ((1.0 - a_prev) / beta_t) * (1.0 - a_t / a_prev);
            let std = options.eta * variance.sqrt();
            coefficients.x0_from_sample = 1.0 / a_t.sqrt();
            coefficients.x0_from_model = -beta_t.sqrt() / a_t.sqrt();
            coefficients.eps_from_model = 1.0;
            coefficients.prev_from_x0 = a_prev.sqrt();
            coefficients.prev_from_eps = (1.0 - a_prev - std * std).sqrt();
            // The draw is always made (the known region uses it); the unknown one only adds it
            // with eta > 0 before the last step.
            let noisy = step > 0 && options.eta > 0.0;
            coefficients.noise = StepNoise::Fixed(if noisy { std } else { 0.0 });
            coefficients.known = Some([a_prev.sqrt(), (1.0 - a_prev).sqrt()]);
            entries.push(Entry::Denoise);
        } else {
            // undo_step: ratio times x = sqrt(1 - beta) x + sqrt(beta) z, folded into one.
            let roots: Vec<(f32, f32)> = (0..ratio)
                .map(|k| {
                    let beta = betas[last + k] as f32;
                    ((1.0 - beta).sqrt(), beta.sqrt())
                })
                .collect();
            let mut scale = 1.0f32;
            let mut noise = vec![0.0f32; ratio];
            for (k, &(keep, add)) in roots.iter().enumerate().rev() {
                noise[k] = add * scale;
                scale *= keep;
            }
            coefficients.prev_from_sample = scale;
            entries.push(Entry::Undo(noise));
        }
        steps.push(coefficients);
        last = step;
    }
    let plan = Plan {
        steps,
        // RePaint clamps x0 to [-1, 1] whatever clip_sample_range says.
        clip: if config.clip_sample {
            Clip::Clamp(1.0)
        } else {
            Clip::None
        },
        learned_variance: false,
        // Slot 0 holds the image, slot 1 the mask.
        history_slots: 2,
        init_noise_sigma: 1.0,
        first_input_scale: None,
        image_noise: [1.0, 0.0],
    };
    Ok((plan, entries))
}

impl super::Sampler {
    /// Inpaints `image` ([B, C, H, W] = `shape`, in the model's range) where `mask` is 0, as
    /// diffusers' `RePaintPipeline` does with this sampler's schedule: `num_inference_steps`
    /// DDIM-like steps with `options`' jumps; `mask` is [B, 1, H, W] or [B, C, H, W], 1 keeping
    /// the image. The noise is x_T, then one draw per denoising step and T / N per jump step
    /// (`NoiseSource::Explicit` takes them in that order). Returns x_0.
    #[allow(clippy::too_many_arguments)]
    pub fn inpaint(
        &self,
        model: &dyn crate::model::NoiseModel,
        shape: [usize; 4],
        num_inference_steps: usize,
        options: &RePaintOptions,
        image: &[f32],
        mask: &[f32],
        noise: super::NoiseSource<'_>,
        progress: &mut dyn FnMut(super::StepProgress),
    ) -> Result<Vec<f32>> {
        use crate::gpu::GpuTensor;

        let gpu = &*self.gpu;
        gpu.check_tensor_shape("sample", &shape)?;
        let (plan, entries) = plan(&self.schedule, num_inference_steps, options)?;
        let len: usize = shape.iter().product();
        let plane = shape[2] * shape[3];
        let shape_error = |tensor: &str, expected: String, found: usize| Error::Shape {
            tensor: tensor.into(),
            expected,
            found: format!("{found} values"),
        };
        if image.len() != len {
            return Err(shape_error(
                "inpainting image",
                format!("{shape:?} ({len} values)"),
                image.len(),
            ));
        }
        let mask: Vec<f32> = if mask.len() == len {
            mask.to_vec()
        } else if mask.len() == shape[0] * plane {
            // One channel for all: repeat it over the image's channels.
            (0..len)
                .map(|i| mask[(i / (shape[1] * plane)) * plane + i % plane])
                .collect()
        } else {
            let expected = format!(
                "[{}, 1 or {}, {}, {}]",
                shape[0], shape[1], shape[2], shape[3]
            );
            return Err(shape_error("inpainting mask", expected, mask.len()));
        };
        let draws: usize = entries
            .iter()
            .map(|e| match e {
                Entry::Denoise => 1,
                Entry::Undo(c) => c.len(),
            })
            .sum();
        let (initial, mut stream) = super::noise::NoiseStream::start(noise, len, draws, true)?;
        let sample = GpuTensor::from_slice(gpu, &shape, &initial, "sample")?;
        let channels = model.output_channels(shape[1]);
        let guidance = model.guidance();
        let run = super::step_kernel::StepRun::new(gpu, &plan, &sample, channels, guidance, false)?;
        run.history.write(gpu, &[image, &mask].concat())?;
        let mut draw = 0;
        for (index, (entry, step)) in entries.iter().zip(&plan.steps).enumerate() {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            let step_noise: Vec<f32> = match entry {
                Entry::Denoise => {
                    let timesteps = vec![step.timestep as u32; shape[0]];
                    model.predict(
                        gpu,
                        &mut encoder,
                        &sample,
                        &timesteps,
                        &crate::model::Conditioning::none(),
                        &run.model_output,
                    )?;
                    draw += 1;
                    stream.step_noise(draw - 1).into_owned()
                }
                Entry::Undo(coefficients) => {
                    let mut sum = vec![0.0f32; len];
                    for &c in coefficients {
                        let z = stream.step_noise(draw);
                        draw += 1;
                        sum.iter_mut().zip(z.iter()).for_each(|(s, &z)| *s += c * z);
                    }
                    sum
                }
            };
            run.noise.write(gpu, &step_noise)?;
            run.record(&mut encoder, index);
            gpu.queue().submit([encoder.finish()]);
            progress(super::StepProgress {
                index,
                total: entries.len(),
                timestep: step.timestep,
            });
        }
        sample.read(gpu)
    }
}
