//! The whole text-to-image pipeline against diffusers' `StableDiffusionPipeline`
//! (tests/fixtures/sd/, `pipe.*`): prompt and negative prompt, guidance 7.5, 4 steps of DDIM
//! and of DPM-Solver++ 2M from explicit latents; every step's latents and the decoded image,
//! SD 1.x- and 2.x-style (epsilon and v-prediction); and the final latents of every solver the
//! CLI offers, guided (`solvers.*`).

mod common;

use std::sync::Arc;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::{
    DpmAlgorithm, DpmSolverOptions, FinalSigma, Method, NoiseSource, SamplerSettings, TextToImage,
    TextToImageSettings, UniPcOptions,
};

const PROMPT: &str = "a painting of a cat sitting on a chair, masterpiece";
const NEGATIVE: &str = "blurry, low quality";
/// The bound for a whole pipeline run.
const TOLERANCE: f64 = 1e-3;
/// The bound for a sampling loop's latents.
const LOOP_TOLERANCE: f64 = 1e-4;

fn pipeline(name: &str) -> TextToImage {
    let dir = format!("{}/tests/fixtures/sd/{name}", env!("CARGO_MANIFEST_DIR"));
    TextToImage::load(Arc::clone(&gpu()), dir, None).unwrap()
}

#[test]
fn ddim_with_guidance_matches_diffusers() {
    check_pipeline(SamplerSettings::ddim(4, 0.0), "pipe.ddim");
}

/// diffusers' `DPMSolverMultistepScheduler.from_config(ddim.config)` defaults: DPM-Solver++,
/// order 2, midpoint, lower-order final step, final sigma zero.
#[test]
fn dpm_solver_with_guidance_matches_diffusers() {
    let settings = SamplerSettings {
        method: Method::DpmSolver(DpmSolverOptions::default()),
        ..SamplerSettings::ddim(4, 0.0)
    };
    check_pipeline(settings, "pipe.dpm");
}

fn check_pipeline(sampler: SamplerSettings, prefix: &str) {
    for (name, refs) in [
        ("sd1_tiny", "sd/sd1_refs.safetensors"),
        ("sd2_tiny", "sd/sd2_refs.safetensors"),
    ] {
        let refs = fixture(refs);
        let pipe = pipeline(name);
        // The tokenizer gives the pipeline's ids (negative prompt first).
        let ids: Vec<u32> = [NEGATIVE, PROMPT]
            .iter()
            .flat_map(|p| pipe.tokenizer().encode_padded(p))
            .collect();
        assert_eq!(ids, refs["pipe.input_ids"].u32(), "{name}: input ids");

        let settings = TextToImageSettings {
            negative_prompt: NEGATIVE.into(),
            sampler: sampler.clone(),
            width: 32,
            height: 32,
            ..TextToImageSettings::new(PROMPT)
        };
        let latents = refs["pipe.latents_in"].f32();
        let noise = NoiseSource::InitialWithSeed {
            initial: &latents,
            seed: 0,
        };
        let mut run = pipe.start(&settings, noise).unwrap();
        let expected = &refs[&format!("{prefix}.step_latents")];
        let per_step = expected.data.len() / 4;
        let mut step = 0;
        while run.step_and_submit().unwrap().is_some() {
            let ours = run.latents().read(&gpu()).unwrap();
            let theirs = &expected.data[step * per_step..(step + 1) * per_step];
            let error = rel_l2(&ours, theirs);
            println!("{name} {prefix} step {step}: latents {error:.2e}");
            assert!(error < TOLERANCE, "{name} step {step}: {error:.2e}");
            step += 1;
        }
        assert_eq!(step, 4);

        // Decoded, mapped as the pipeline's output_type="np": NHWC in [0, 1].
        let image = run.decode().unwrap();
        let plane = 32 * 32;
        let mapped: Vec<f32> = (0..plane * 3)
            .map(|i| {
                let (pixel, channel) = (i / 3, i % 3);
                (image[channel * plane + pixel] / 2.0 + 0.5).clamp(0.0, 1.0)
            })
            .collect();
        let error = rel_l2(&mapped, &refs[&format!("{prefix}.image")].data);
        println!("{name} {prefix}: image {error:.2e}");
        assert!(error < TOLERANCE, "{name} image: {error:.2e}");
    }
}

/// The CLI's `--sampler` choices, as diffusers' scheduler classes `from_config` the folder's
/// DDIM config (tools/fixtures/make_sd_refs.py's `SOLVERS`).
fn cli_solvers() -> Vec<(&'static str, Method)> {
    let dpm = |solver_order, algorithm_type| {
        Method::DpmSolver(DpmSolverOptions {
            solver_order,
            algorithm_type,
            ..Default::default()
        })
    };
    vec![
        ("ddim", Method::ddim(0.0)),
        ("ddpm", Method::Ddpm),
        ("dpmpp-2m", dpm(2, DpmAlgorithm::DpmSolverPlusPlus)),
        ("dpmpp-3m", dpm(3, DpmAlgorithm::DpmSolverPlusPlus)),
        ("dpmpp-2m-sde", dpm(2, DpmAlgorithm::SdeDpmSolverPlusPlus)),
        ("unipc", Method::UniPc(UniPcOptions::default())),
        (
            "euler",
            Method::Euler {
                use_karras_sigmas: false,
                final_sigmas_type: FinalSigma::Zero,
            },
        ),
        ("euler-a", Method::EulerAncestral),
    ]
}

/// Guidance 7.5 with every solver, 4 steps from diffusers' latents and step noise: the final
/// latents against diffusers' pipeline.
#[test]
fn every_solver_with_guidance_matches_diffusers() {
    for (name, refs) in [
        ("sd1_tiny", "sd/sd1_refs.safetensors"),
        ("sd2_tiny", "sd/sd2_refs.safetensors"),
    ] {
        let refs = fixture(refs);
        let pipe = pipeline(name);
        let latents = refs["pipe.latents_in"].f32();
        let step_noise = refs["solvers.noise"].f32();
        for (solver, method) in cli_solvers() {
            let settings = TextToImageSettings {
                negative_prompt: NEGATIVE.into(),
                sampler: SamplerSettings {
                    method,
                    ..SamplerSettings::ddim(4, 0.0)
                },
                width: 32,
                height: 32,
                ..TextToImageSettings::new(PROMPT)
            };
            let noise = NoiseSource::Explicit {
                initial: &latents,
                per_step: &step_noise,
            };
            let mut run = pipe.start(&settings, noise).unwrap();
            while run.step_and_submit().unwrap().is_some() {}
            let ours = run.latents().read(&gpu()).unwrap();
            let theirs = &refs[&format!("solvers.{solver}.latents")].data;
            let error = rel_l2(&ours, theirs);
            println!("{name} {solver}: final latents {error:.2e}");
            assert!(error < LOOP_TOLERANCE, "{name} {solver}: {error:.2e}");
        }
    }
}

#[test]
fn bad_sizes_are_errors() {
    let pipe = pipeline("sd1_tiny");
    let settings = TextToImageSettings {
        width: 30,
        height: 32,
        ..TextToImageSettings::new("x")
    };
    let error = pipe.start(&settings, NoiseSource::Seed(0)).err().unwrap();
    assert!(error.to_string().contains("multiples of"), "{error}");
}
