//! The multistep and sigma-space solvers against tests/fixtures/diffusers/multistep_refs.safetensors (made by
//! tools/fixtures/make_multistep_refs.py with diffusers 0.42.1): timestep and sigma tables,
//! whole scheduler loops fed with fixed model outputs (every step checked, so first, middle
//! and final lower-order steps, each with diffusers' own history), and whole loops through the
//! small U-Net.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use common::{Array, fixture, gpu, rel_l2, rel_l2_f64};
use diffusion_wgpu::{
    BetaSchedule, DpmAlgorithm, DpmSolverOptions, DpmSolverType, FinalSigma, Gpu, GpuTensor,
    Method, NoiseModel, NoiseSource, PredictionType, Sampler, SamplerSettings, Schedule,
    SchedulerConfig, SigmaSpacing, TimestepSpacing, Unet,
};

const SHAPE: [usize; 4] = [2, 3, 8, 8];
const STEP_TOLERANCE: f64 = 1e-5;
const UNET_TOLERANCE: f64 = 1e-4;

/// Replays the fixture's model outputs, one per step, whatever the sample; records the model
/// inputs it was given.
struct Replay {
    outputs: Vec<f32>,
    next: Cell<usize>,
    inputs: RefCell<Vec<Vec<f32>>>,
}

impl Replay {
    fn new(refs: &HashMap<String, Array>) -> Self {
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
        output: &GpuTensor,
    ) -> diffusion_wgpu::Result<()> {
        // The input was written by the previous step, submitted already.
        self.inputs.borrow_mut().push(sample.read(gpu)?);
        let len = output.len();
        let i = self.next.replace(self.next.get() + 1);
        output.write(gpu, &self.outputs[i * len..(i + 1) * len])
    }
}

/// The configuration of each case of the fixture script's `DPM_CASES`.
fn dpm_case(name: &str) -> (SchedulerConfig, DpmSolverOptions, usize) {
    let mut config = SchedulerConfig {
        timestep_spacing: TimestepSpacing::Linspace,
        ..Default::default()
    };
    let mut options = DpmSolverOptions::default();
    let mut n = 10;
    for part in name.split('.') {
        match part {
            "pp1" | "pp2" | "pp3" => options.solver_order = part[2..].parse().unwrap(),
            "dpm2" | "dpm3" => {
                options.algorithm_type = DpmAlgorithm::DpmSolver;
                options.final_sigmas_type = FinalSigma::SigmaMin;
                options.solver_order = part[3..].parse().unwrap();
                if part == "dpm3" {
                    n = 20;
                }
            }
            "sde2" | "sde3" => {
                options.algorithm_type = DpmAlgorithm::SdeDpmSolverPlusPlus;
                options.solver_order = part[3..].parse().unwrap();
                if part == "sde3" {
                    n = 20;
                }
            }
            "N20" => n = 20,
            "heun" => options.solver_type = DpmSolverType::Heun,
            "nolof" => options.lower_order_final = false,
            "sigmamin" => {
                options.final_sigmas_type = FinalSigma::SigmaMin;
                options.lower_order_final = false;
                n = 16;
            }
            "eulerfinal" => {
                options.final_sigmas_type = FinalSigma::SigmaMin;
                options.euler_at_final = true;
                n = 16;
            }
            "v" => config.prediction_type = PredictionType::VPrediction,
            "sample" => config.prediction_type = PredictionType::Sample,
            "thresh" => {
                config.thresholding = true;
                config.sample_max_value = 1.5;
            }
            "karras" => options.sigma_spacing = SigmaSpacing::Karras,
            "lu" => options.sigma_spacing = SigmaSpacing::LuLambdas,
            "leading" => {
                config.timestep_spacing = TimestepSpacing::Leading;
                config.steps_offset = 1;
            }
            "trailing" => {
                config.timestep_spacing = TimestepSpacing::Trailing;
                n = 7;
            }
            "zsnr" => {
                config.rescale_betas_zero_snr = true;
                config.timestep_spacing = TimestepSpacing::Trailing;
            }
            "cosclip" => {
                config.beta_schedule = BetaSchedule::SquaredcosCapV2;
                options.lambda_min_clipped = -5.1;
            }
            other => panic!("unknown case part {other}"),
        }
    }
    (config, options, n)
}

const DPM_CASES: &[&str] = &[
    "pp2",
    "pp2.N20",
    "pp2.heun",
    "pp1",
    "pp3",
    "pp3.N20",
    "pp2.nolof",
    "pp2.sigmamin",
    "pp2.eulerfinal",
    "pp2.v",
    "pp2.sample",
    "pp2.thresh",
    "pp2.karras",
    "pp3.lu",
    "pp2.leading",
    "pp2.trailing",
    "pp2.zsnr",
    "pp2.cosclip",
    "dpm2",
    "dpm2.heun",
    "dpm3",
    "dpm2.v",
    "dpm2.sample",
    "dpm2.thresh",
    "sde2",
    "sde2.heun",
    "sde3",
];

/// Checks the case's tables and runs its loop; returns the worst step error.
fn check_run(
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

#[test]
fn dpm_solver_tables_and_steps_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    for name in DPM_CASES {
        let (config, options, n) = dpm_case(name);
        let key = format!("dpm.{name}");
        let worst = check_run(&refs, &key, config, Method::DpmSolver(options), n);
        println!("{key}: {n} steps, worst relative L2 error {worst:.2e}");
    }
}

/// The configuration of each case of the fixture script's `EULER_CASES` / `EULER_A_CASES`.
fn euler_case(name: &str) -> (SchedulerConfig, Method) {
    let mut config = SchedulerConfig {
        timestep_spacing: TimestepSpacing::Linspace,
        ..Default::default()
    };
    let (mut karras, mut final_sigma, mut ancestral) = (false, FinalSigma::Zero, false);
    for part in name.split('.') {
        match part {
            "euler" => {}
            "eulera" => ancestral = true,
            "leading" => {
                config.timestep_spacing = TimestepSpacing::Leading;
                config.steps_offset = 1;
            }
            "trailing" => config.timestep_spacing = TimestepSpacing::Trailing,
            "karras" => karras = true,
            "v" => config.prediction_type = PredictionType::VPrediction,
            "sample" => config.prediction_type = PredictionType::Sample,
            "sigmamin" => final_sigma = FinalSigma::SigmaMin,
            "zsnr" => {
                config.rescale_betas_zero_snr = true;
                config.timestep_spacing = TimestepSpacing::Trailing;
            }
            other => panic!("unknown case part {other}"),
        }
    }
    let method = if ancestral {
        Method::EulerAncestral
    } else {
        Method::Euler {
            use_karras_sigmas: karras,
            final_sigmas_type: final_sigma,
        }
    };
    (config, method)
}

const EULER_CASES: &[&str] = &[
    "euler",
    "euler.leading",
    "euler.trailing",
    "euler.karras",
    "euler.v",
    "euler.sample",
    "euler.sigmamin",
    "euler.zsnr",
    "eulera",
    "eulera.leading",
    "eulera.trailing",
    "eulera.v",
];

#[test]
fn euler_tables_and_steps_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    for name in EULER_CASES {
        let (config, method) = euler_case(name);
        let n = 10;
        let schedule = Schedule::new(config.clone()).unwrap();
        let karras = matches!(
            method,
            Method::Euler {
                use_karras_sigmas: true,
                ..
            }
        );
        let final_sigma = match method {
            Method::Euler {
                final_sigmas_type, ..
            } => final_sigmas_type,
            _ => FinalSigma::Zero,
        };
        let table = schedule.euler_sigma_table(n, karras, final_sigma).unwrap();
        // diffusers' float timesteps, rounded (the models here take integers).
        let expected: Vec<usize> = refs[&format!("tables.{name}.timesteps")]
            .data
            .iter()
            .map(|&t| t.round_ties_even() as usize)
            .collect();
        assert_eq!(table.timesteps, expected, "{name}");
        let sigmas: Vec<f64> = table.sigmas.iter().map(|&s| f64::from(s)).collect();
        let e = rel_l2_f64(&sigmas, &refs[&format!("tables.{name}.sigmas")].data);
        assert!(e < STEP_TOLERANCE, "{name}: sigmas {e:.2e}");
        let worst = check_run(&refs, name, config, method, n);
        println!("{name}: {n} steps, worst relative L2 error {worst:.2e} (sigmas {e:.2e})");
    }
}

fn unet_dir() -> String {
    format!(
        "{}/tests/fixtures/diffusers/unet_small",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn unet_loops_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    let unet = Unet::load(gpu(), unet_dir()).unwrap();
    let shape = [2, 3, 32, 32];
    let x_t = refs["unet.x_T"].f32();
    let noise = refs["unet.noise"].f32();
    let cases = [
        "dpm.pp2",
        "dpm.pp3",
        "dpm.sde2",
        "euler.leading",
        "eulera.trailing",
    ];
    for key in cases {
        let (config, method, n) = match key.strip_prefix("dpm.") {
            Some(name) => {
                let (config, options, n) = dpm_case(name);
                (config, Method::DpmSolver(options), n)
            }
            None => {
                let (config, method) = euler_case(key);
                (config, method, 10)
            }
        };
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings {
            method,
            num_inference_steps: n,
            custom_timesteps: None,
        };
        let source = NoiseSource::Explicit {
            initial: &x_t,
            per_step: &noise,
        };
        let x0 = sampler
            .sample(&unet, shape, &settings, source, &mut |_| {})
            .unwrap();
        let e = rel_l2(&x0, &refs[&format!("unet.{key}.x0")].data);
        println!("U-Net {key}: {n} steps, x0 relative L2 error {e:.2e}");
        assert!(e < UNET_TOLERANCE, "{key}: {e:.2e}");
    }
}

#[test]
fn dpm_solver_refuses_unsupported_settings() {
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let settings = |options| SamplerSettings {
        method: Method::DpmSolver(options),
        num_inference_steps: 10,
        custom_timesteps: None,
    };
    for options in [
        DpmSolverOptions {
            solver_order: 4,
            ..Default::default()
        },
        DpmSolverOptions {
            algorithm_type: DpmAlgorithm::DpmSolver,
            ..Default::default()
        },
    ] {
        let error = sampler.timesteps(&settings(options)).unwrap_err();
        assert!(
            matches!(error, diffusion_wgpu::Error::InvalidSetting { .. }),
            "{error}"
        );
    }
}
