//! The sigma-space solvers (Euler, Euler ancestral) against
//! tests/fixtures/diffusers/multistep_refs.safetensors (made by
//! tools/fixtures/make_multistep_refs.py with diffusers 0.42.1): sigma tables, whole scheduler
//! loops fed with fixed model outputs (every step's sample and scaled model input checked), and
//! whole loops through the small U-Net.

mod common;

use common::solver_runs::{STEP_TOLERANCE, check_run};
use common::{fixture, gpu, rel_l2, rel_l2_f64};
use diffusion_wgpu::{
    FinalSigma, Method, NoiseSource, PredictionType, Sampler, SamplerSettings, Schedule,
    SchedulerConfig, TimestepSpacing, Unet,
};

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

#[test]
fn euler_unet_loops_match_diffusers() {
    let refs = fixture("diffusers/multistep_refs.safetensors");
    let dir = format!(
        "{}/tests/fixtures/diffusers/unet_small",
        env!("CARGO_MANIFEST_DIR")
    );
    let unet = Unet::load(gpu(), dir).unwrap();
    let x_t = refs["unet.x_T"].f32();
    let noise = refs["unet.noise"].f32();
    for key in ["euler.leading", "eulera.trailing"] {
        let (config, method) = euler_case(key);
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings {
            method,
            num_inference_steps: 10,
            custom_timesteps: None,
        };
        let source = NoiseSource::Explicit {
            initial: &x_t,
            per_step: &noise,
        };
        let x0 = sampler
            .sample(&unet, [2, 3, 32, 32], &settings, source, &mut |_| {})
            .unwrap();
        let e = rel_l2(&x0, &refs[&format!("unet.{key}.x0")].data);
        println!("U-Net {key}: 10 steps, x0 relative L2 error {e:.2e}");
        assert!(e < 1e-4, "{key}: {e:.2e}");
    }
}
