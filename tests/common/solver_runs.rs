//! Whole scheduler loops fed with a fixture's fixed model outputs, checked step by step
//! against diffusers (tests/multistep.rs, tests/euler.rs).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use diffusion_wgpu::{
    Conditioning, Gpu, GpuTensor, Method, NoiseModel, NoiseSource, Sampler, SamplerSettings,
    Schedule, SchedulerConfig,
};

use super::{Array, gpu, rel_l2, rel_l2_f64};

pub const SHAPE: [usize; 4] = [2, 3, 8, 8];
pub const STEP_TOLERANCE: f64 = 1e-5;

/// Replays the fixture's model outputs, one per step, whatever the sample; records the model
/// inputs it was given.
pub struct Replay {
    outputs: Vec<f32>,
    next: Cell<usize>,
    inputs: RefCell<Vec<Vec<f32>>>,
}

impl Replay {
    pub fn new(refs: &HashMap<String, Array>) -> Self {
        Self {
            outputs: refs["model_outputs"].f32(),
            next: Cell::new(0),
            inputs: RefCell::new(Vec::new()),
        }
    }
}

impl NoiseModel for Replay {
    fn predict(
        &self,
        gpu: &Gpu,
        _encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        _timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> diffusion_wgpu::Result<()> {
        // The input was written by the previous step, submitted already.
        self.inputs.borrow_mut().push(sample.read(gpu)?);
        let len = output.len();
        let i = self.next.replace(self.next.get() + 1);
        output.write(gpu, &self.outputs[i * len..(i + 1) * len])
    }
}

/// Checks the case's tables and runs its loop; returns the worst step error.
pub fn check_run(
    refs: &HashMap<String, Array>,
    key: &str,
    config: SchedulerConfig,
    method: Method,
    n: usize,
) -> f64 {
    let schedule = Schedule::new(config.clone()).unwrap();
    if let Method::DpmSolver(options) = &method {
        let table = schedule
            .sigma_table(
                n,
                options.sigma_spacing,
                options.final_sigmas_type,
                options.lambda_min_clipped,
            )
            .unwrap();
        assert_eq!(
            table.timesteps,
            refs[&format!("tables.{key}.timesteps")].usize(),
            "{key}"
        );
        let sigmas: Vec<f64> = table.sigmas.iter().map(|&s| f64::from(s)).collect();
        let e = rel_l2_f64(&sigmas, &refs[&format!("tables.{key}.sigmas")].data);
        assert!(e < STEP_TOLERANCE, "{key}: sigmas {e:.2e}");
    }
    let sampler = Sampler::new(gpu(), config).unwrap();
    let settings = SamplerSettings {
        method,
        num_inference_steps: n,
        custom_timesteps: None,
    };
    let expected: Vec<usize> = refs[&format!("tables.{key}.timesteps")]
        .data
        .iter()
        .map(|&t| t.round_ties_even() as usize)
        .collect();
    assert_eq!(sampler.timesteps(&settings).unwrap(), expected, "{key}");
    let len: usize = SHAPE.iter().product();
    let model = Replay::new(refs);
    let x_t = refs["x_T"].f32();
    let noise = refs["noise"].f32();
    let source = NoiseSource::Explicit {
        initial: &x_t,
        per_step: &noise[..n * len],
    };
    let mut run = sampler.start(&model, SHAPE, &settings, source).unwrap();
    let prev = &refs[&format!("run.{key}.prev")];
    let mut worst = 0.0f64;
    for i in 0..n {
        run.step_and_submit(&model).unwrap();
        let sample = run.sample().read(&gpu()).unwrap();
        let e = rel_l2(&sample, &prev.index(i));
        assert!(e < STEP_TOLERANCE, "{key}: step {i} of {n}: {e:.2e}");
        worst = worst.max(e);
    }
    // The sigma-space solvers scale the model input; the others feed the sample as it is.
    if let Some(model_in) = refs.get(&format!("run.{key}.model_in")) {
        for (i, input) in model.inputs.borrow().iter().enumerate() {
            let e = rel_l2(input, &model_in.index(i));
            assert!(e < STEP_TOLERANCE, "{key}: model input {i}: {e:.2e}");
            worst = worst.max(e);
        }
    }
    worst
}
