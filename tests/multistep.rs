//! The multistep solvers (DPM-Solver, UniPC) against
//! tests/fixtures/diffusers/multistep_refs.safetensors (made by
//! tools/fixtures/make_multistep_refs.py with diffusers 0.42.1): timestep and sigma tables,
//! whole scheduler loops fed with fixed model outputs (every step checked, so first, middle
//! and final lower-order steps, each with diffusers' own history), and whole loops through the
//! small U-Net.

mod common;

use common::solver_runs::{Replay, SHAPE, STEP_TOLERANCE, check_run};
use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::{
    BetaSchedule, DpmAlgorithm, DpmSolverOptions, DpmSolverType, FinalSigma, Method, NoiseSource,
    PredictionType, RePaintOptions, Sampler, SamplerSettings, SchedulerConfig, SchedulerFile,
    SigmaSpacing, TimestepSpacing, Unet, UniPcOptions, UniPcSolverType,
};

const UNET_TOLERANCE: f64 = 1e-4;

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

/// The configuration of each case of the fixture script's `UNIPC_CASES` (10 steps).
fn unipc_case(name: &str) -> (SchedulerConfig, UniPcOptions) {
    let mut config = SchedulerConfig {
        timestep_spacing: TimestepSpacing::Linspace,
        ..Default::default()
    };
    let mut options = UniPcOptions::default();
    for part in name.split('.') {
        match part {
            "unipc" => {}
            "unipc1" | "unipc3" => options.solver_order = part[5..].parse().unwrap(),
            "bh1" => {
                options.solver_type = UniPcSolverType::Bh1;
                options.final_sigmas_type = FinalSigma::SigmaMin;
            }
            "nolof" => {
                options.lower_order_final = false;
                options.final_sigmas_type = FinalSigma::SigmaMin;
            }
            "eps" => {
                options.predict_x0 = false;
                options.final_sigmas_type = FinalSigma::SigmaMin;
            }
            "nocorr" => options.disable_corrector = vec![0, 3],
            "v" => config.prediction_type = PredictionType::VPrediction,
            "sample" => config.prediction_type = PredictionType::Sample,
            "thresh" => {
                config.thresholding = true;
                config.sample_max_value = 1.5;
            }
            "karras" => options.use_karras_sigmas = true,
            "sigmamin" => options.final_sigmas_type = FinalSigma::SigmaMin,
            "trailing" => config.timestep_spacing = TimestepSpacing::Trailing,
            other => panic!("unknown case part {other}"),
        }
    }
    (config, options)
}

const UNIPC_CASES: &[&str] = &[
    "unipc",
    "unipc.bh1",
    "unipc1",
    "unipc3",
    "unipc3.bh1",
    "unipc.nolof",
    "unipc.eps",
    "unipc3.eps",
    "unipc.nocorr",
    "unipc.v",
    "unipc.sample",
    "unipc.thresh",
    "unipc.karras",
    "unipc.sigmamin",
    "unipc.trailing",
];

#[test]
fn unipc_tables_and_steps_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    for name in UNIPC_CASES {
        let (config, options) = unipc_case(name);
        let worst = check_run(&refs, name, config, Method::UniPc(options), 10);
        println!("{name}: 10 steps, worst relative L2 error {worst:.2e}");
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
    let cases = ["dpm.pp2", "dpm.pp3", "dpm.sde2", "unipc", "unipc3"];
    for key in cases {
        let (config, method, n) = match key.strip_prefix("dpm.") {
            Some(name) => {
                let (config, options, n) = dpm_case(name);
                (config, Method::DpmSolver(options), n)
            }
            None => {
                let (config, options) = unipc_case(key);
                (config, Method::UniPc(options), 10)
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
fn multistep_solvers_refuse_unsupported_settings() {
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let settings = |method| SamplerSettings {
        method,
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
        let error = sampler
            .timesteps(&settings(Method::DpmSolver(options)))
            .unwrap_err();
        assert!(
            matches!(error, diffusion_wgpu::Error::InvalidSetting { .. }),
            "{error}"
        );
    }
    for options in [
        UniPcOptions {
            solver_order: 4,
            ..Default::default()
        },
        UniPcOptions {
            solver_type: UniPcSolverType::Bh1,
            ..Default::default()
        },
        UniPcOptions {
            predict_x0: false,
            ..Default::default()
        },
        UniPcOptions {
            lower_order_final: false,
            ..Default::default()
        },
    ] {
        let error = sampler
            .timesteps(&settings(Method::UniPc(options)))
            .unwrap_err();
        assert!(
            matches!(error, diffusion_wgpu::Error::InvalidSetting { .. }),
            "{error}"
        );
    }
}

#[test]
fn saved_scheduler_configs_load_by_class_name() {
    // Each file is diffusers' `save_config` of a fixture case: loading it by `_class_name`
    // must give that case's run.
    let refs = fixture("diffusers/multistep_refs.safetensors");
    for key in [
        "dpm.pp3.lu",
        "dpm.sde2.heun",
        "dpm.pp2.cosclip",
        "unipc3.bh1",
        "unipc.nocorr",
        "euler.karras",
        "eulera.v",
    ] {
        let path = format!(
            "{}/tests/fixtures/diffusers/scheduler_configs/{key}/scheduler_config.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let file = SchedulerFile::from_file(&path).unwrap();
        let worst = check_run(&refs, key, file.config, file.method, 10);
        println!(
            "{key} ({}): worst relative L2 error {worst:.2e}",
            file.class_name
        );
    }
}

#[test]
fn img2img_starts_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    let image = refs["img2img.image"].f32();
    let x_t = refs["x_T"].f32();
    let noise = refs["noise"].f32();
    let len: usize = SHAPE.iter().product();
    let cases: [(&str, Method, f64); 7] = [
        ("ddim", Method::ddim(0.0), 0.5),
        ("dpm.pp2", Method::DpmSolver(Default::default()), 0.6),
        (
            "dpm.pp3",
            Method::DpmSolver(DpmSolverOptions {
                solver_order: 3,
                ..Default::default()
            }),
            0.75,
        ),
        ("unipc", Method::UniPc(Default::default()), 0.6),
        (
            "unipc3",
            Method::UniPc(UniPcOptions {
                solver_order: 3,
                ..Default::default()
            }),
            0.8,
        ),
        (
            "euler",
            Method::Euler {
                use_karras_sigmas: false,
                final_sigmas_type: FinalSigma::Zero,
            },
            0.5,
        ),
        ("eulera", Method::EulerAncestral, 0.3),
    ];
    for (name, method, strength) in cases {
        // DDIMScheduler defaults to leading spacing, the solvers to linspace.
        let config = SchedulerConfig {
            timestep_spacing: if name == "ddim" {
                TimestepSpacing::Leading
            } else {
                TimestepSpacing::Linspace
            },
            clip_sample: true,
            ..Default::default()
        };
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings {
            method,
            num_inference_steps: 10,
            custom_timesteps: None,
        };
        let expected: Vec<usize> = refs[&format!("img2img.{name}.timesteps")]
            .data
            .iter()
            .map(|&t| t.round_ties_even() as usize)
            .collect();
        let timesteps = sampler.img2img_timesteps(&settings, strength).unwrap();
        assert_eq!(timesteps, expected, "{name}");
        let n = timesteps.len();
        let model = Replay::new(&refs);
        let source = NoiseSource::Explicit {
            initial: &x_t,
            per_step: &noise[..n * len],
        };
        let mut run = sampler
            .start_from_image(&model, SHAPE, &settings, &image, strength, source)
            .unwrap();
        let start = run.sample().read(&gpu()).unwrap();
        let mut worst = rel_l2(&start, &refs[&format!("img2img.{name}.start")].data);
        assert!(worst < STEP_TOLERANCE, "{name}: start {worst:.2e}");
        let prev = &refs[&format!("img2img.{name}.prev")];
        for i in 0..n {
            run.step_and_submit(&model).unwrap();
            let e = rel_l2(&run.sample().read(&gpu()).unwrap(), &prev.index(i));
            assert!(e < STEP_TOLERANCE, "{name}: step {i} of {n}: {e:.2e}");
            worst = worst.max(e);
        }
        println!(
            "img2img {name} (strength {strength}, {n} steps): worst relative L2 error {worst:.2e}"
        );
    }
}

#[test]
fn repaint_matches_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    let image = refs["repaint.image"].f32();
    let mask = refs["repaint.mask"].f32();
    let draws = refs["repaint.noise"].f32();
    let len: usize = SHAPE.iter().product();
    for (name, eta, clip, jump_length, jump_n_sample) in [
        ("eta0", 0.0, true, 3, 2),
        ("eta1", 1.0, true, 3, 2),
        ("noclip", 0.5, false, 2, 2),
    ] {
        let config = SchedulerConfig {
            num_train_timesteps: 100,
            clip_sample: clip,
            ..Default::default()
        };
        let sampler = Sampler::new(gpu(), config).unwrap();
        let options = RePaintOptions {
            eta,
            jump_length,
            jump_n_sample,
        };
        // x_T, one draw per denoising step, 10 (T / N) per jump step.
        let timesteps = refs[&format!("repaint.{name}.timesteps")].usize();
        let mut last = timesteps[0] + 1;
        let mut needed = 0;
        for &t in &timesteps {
            needed += if t < last { 1 } else { 10 };
            last = t;
        }
        let model = Replay::new(&refs);
        let source = NoiseSource::Explicit {
            initial: &draws[..len],
            per_step: &draws[len..(1 + needed) * len],
        };
        let mut visited = Vec::new();
        let x0 = sampler
            .inpaint(
                &model,
                SHAPE,
                10,
                &options,
                &image,
                &mask,
                source,
                &mut |p| visited.push(p.timestep),
            )
            .unwrap();
        assert_eq!(visited, timesteps, "{name}");
        let e = rel_l2(&x0, &refs[&format!("repaint.{name}.x0")].data);
        println!(
            "RePaint {name}: {} entries, x0 relative L2 error {e:.2e}",
            timesteps.len()
        );
        assert!(e < STEP_TOLERANCE, "{name}: {e:.2e}");
    }
}
