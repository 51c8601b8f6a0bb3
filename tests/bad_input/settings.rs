//! Scheduler configs, solver files and sampler settings out of range.

use super::*;

#[test]
fn scheduler_configs_and_sampler_settings() {
    let dir = scratch("scheduler");
    let cases: Vec<(&str, &str, Want)> = vec![
        ("empty", "", Want::Config("(file)", "not JSON")),
        ("not JSON", "{ not json", Want::Config("(file)", "not JSON")),
        (
            "a JSON list",
            "[1, 2]",
            Want::Config("(file)", "expected a JSON object"),
        ),
        (
            "unknown beta schedule",
            r#"{"beta_schedule": "cosine"}"#,
            Want::Config("beta_schedule", "supported: linear"),
        ),
        (
            "flag as a string",
            r#"{"clip_sample": "yes"}"#,
            Want::Config("clip_sample", "expected true or false"),
        ),
        (
            "negative training steps",
            r#"{"num_train_timesteps": -5}"#,
            Want::Config("num_train_timesteps", "expected a non-negative integer"),
        ),
        (
            "zero training steps",
            r#"{"num_train_timesteps": 0}"#,
            Want::Config("num_train_timesteps", "expected 1..="),
        ),
        (
            "a trillion training steps",
            r#"{"num_train_timesteps": 1000000000000}"#,
            Want::Config("num_train_timesteps", "expected 1..="),
        ),
        (
            "negative beta",
            r#"{"beta_start": -0.1}"#,
            Want::Config("beta_start", "expected a finite value in [0, 1)"),
        ),
        (
            "beta above one",
            r#"{"beta_end": 1.5}"#,
            Want::Config("beta_end", "expected a finite value in [0, 1)"),
        ),
        (
            "beta overflowing f64",
            r#"{"beta_end": 1e999}"#,
            Want::Config("(file)", "not JSON"),
        ),
        (
            "too few trained betas",
            r#"{"trained_betas": [0.1, 0.2]}"#,
            Want::Config("trained_betas", "expected 1000 values"),
        ),
        (
            "trained betas not a list",
            r#"{"trained_betas": "none"}"#,
            Want::Config("trained_betas", "null or a list of numbers"),
        ),
        (
            "trained beta out of range",
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 1.0, 0.2]}"#,
            Want::Config("trained_betas", "entry 1 is 1"),
        ),
        (
            "unknown prediction type",
            r#"{"prediction_type": "eps"}"#,
            Want::Config("prediction_type", "supported: epsilon"),
        ),
        (
            "unknown variance type",
            r#"{"variance_type": "fixed"}"#,
            Want::Config("variance_type", "supported: fixed_small"),
        ),
        (
            "unknown spacing",
            r#"{"timestep_spacing": "even"}"#,
            Want::Config("timestep_spacing", "supported: leading"),
        ),
        (
            "zero clip range",
            r#"{"clip_sample_range": 0}"#,
            Want::Config("clip_sample_range", "expected a finite value > 0"),
        ),
        (
            "threshold ratio above one",
            r#"{"dynamic_thresholding_ratio": 1.5}"#,
            Want::Config("dynamic_thresholding_ratio", "expected a value in (0, 1]"),
        ),
        (
            "negative sample max",
            r#"{"sample_max_value": -1}"#,
            Want::Config("sample_max_value", "expected a finite value > 0"),
        ),
        (
            "offset past the table",
            r#"{"steps_offset": 1000}"#,
            Want::Config("steps_offset", "below num_train_timesteps"),
        ),
    ];
    for (case, text, want) in cases {
        let path = dir.join(format!("{}.json", case.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        check(
            case,
            "s.json",
            SchedulerConfig::from_json_str(text, "s.json"),
            want,
        );
        check(
            case,
            &path.display().to_string(),
            SchedulerConfig::from_file(&path),
            want,
        );
    }

    // Built in code, the same checks run when the schedule is made.
    let nan_betas = SchedulerConfig {
        num_train_timesteps: 4,
        trained_betas: Some(vec![0.1, f64::NAN, 0.1, 0.1]),
        ..Default::default()
    };
    check(
        "NaN trained beta",
        "scheduler config",
        Schedule::new(nan_betas),
        Want::Config("trained_betas", "entry 1 is NaN"),
    );

    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let settings: Vec<(&str, SamplerSettings, Want)> = vec![
        (
            "zero steps",
            SamplerSettings::ddim(0, 0.0),
            Want::Setting("num_inference_steps", "0 is not in 1..=1000"),
        ),
        (
            "more steps than training steps",
            SamplerSettings::ddpm(1001),
            Want::Setting("num_inference_steps", "1001 is not in 1..=1000"),
        ),
        (
            "negative eta",
            SamplerSettings::ddim(10, -0.1),
            Want::Setting("eta", "is not in [0, 1]"),
        ),
        (
            "eta above one",
            SamplerSettings::ddim(10, 1.5),
            Want::Setting("eta", "is not in [0, 1]"),
        ),
        (
            "NaN eta",
            SamplerSettings::ddim(10, f32::NAN),
            Want::Setting("eta", "NaN is not in [0, 1]"),
        ),
        (
            "ascending custom timesteps",
            SamplerSettings {
                custom_timesteps: Some(vec![10, 20]),
                ..SamplerSettings::ddpm(2)
            },
            Want::Setting("custom_timesteps", "strictly descending"),
        ),
        (
            "custom timesteps past the table",
            SamplerSettings {
                custom_timesteps: Some(vec![1000, 10]),
                ..SamplerSettings::ddpm(2)
            },
            Want::Setting("custom_timesteps", "below 1000"),
        ),
        (
            "custom timesteps for DDIM",
            SamplerSettings {
                custom_timesteps: Some(vec![500, 0]),
                ..SamplerSettings::ddim(2, 0.0)
            },
            Want::Setting("custom_timesteps", "only DDPM"),
        ),
    ];
    for (case, settings, want) in settings {
        check(case, "", sampler.timesteps(&settings), want);
    }
}

#[test]
fn solver_scheduler_files_and_settings() {
    let files: Vec<(&str, &str, Want)> = vec![
        (
            "unknown class",
            r#"{"_class_name": "LMSDiscreteScheduler"}"#,
            Want::Config("_class_name", "LMSDiscreteScheduler is not supported"),
        ),
        (
            "unknown DPM algorithm",
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver"}"#,
            Want::Config("algorithm_type", "supported: dpmsolver++"),
        ),
        (
            "DPM order as a string",
            r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": "2"}"#,
            Want::Config("solver_order", "non-negative integer"),
        ),
        (
            "exponential sigmas",
            r#"{"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true}"#,
            Want::Config("use_exponential_sigmas", "not supported"),
        ),
        (
            "log-linear interpolation",
            r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}"#,
            Want::Config("interpolation_type", "not supported"),
        ),
        (
            "UniPC corrector list of strings",
            r#"{"_class_name": "UniPCMultistepScheduler", "disable_corrector": ["a"]}"#,
            Want::Config(
                "disable_corrector",
                "entry 0: expected a non-negative integer",
            ),
        ),
        (
            "a bad shared key in a solver file",
            r#"{"_class_name": "UniPCMultistepScheduler", "beta_schedule": "cosine"}"#,
            Want::Config("beta_schedule", "supported: linear"),
        ),
    ];
    for (case, text, want) in files {
        check(
            case,
            "test",
            SchedulerFile::from_json_str(text, "test"),
            want,
        );
    }

    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let run = |method| SamplerSettings {
        method,
        num_inference_steps: 10,
        custom_timesteps: None,
    };
    let settings: Vec<(&str, SamplerSettings, Want)> = vec![
        (
            "DPM-Solver order 4",
            run(Method::DpmSolver(DpmSolverOptions {
                solver_order: 4,
                ..Default::default()
            })),
            Want::Setting("solver_order", "4 is not supported"),
        ),
        (
            "DPM-Solver order 0",
            run(Method::DpmSolver(DpmSolverOptions {
                solver_order: 0,
                ..Default::default()
            })),
            Want::Setting("solver_order", "0 is not supported"),
        ),
        (
            "dpmsolver with a zero final sigma",
            run(Method::DpmSolver(DpmSolverOptions {
                algorithm_type: DpmAlgorithm::DpmSolver,
                ..Default::default()
            })),
            Want::Setting("final_sigmas_type", "use sigma_min"),
        ),
        (
            "UniPC order 5",
            run(Method::UniPc(UniPcOptions {
                solver_order: 5,
                ..Default::default()
            })),
            Want::Setting("solver_order", "5 is not supported"),
        ),
        (
            "UniPC bh1 with a zero final sigma",
            run(Method::UniPc(UniPcOptions {
                solver_type: UniPcSolverType::Bh1,
                ..Default::default()
            })),
            Want::Setting("solver_type", "bh1 needs final_sigmas_type sigma_min"),
        ),
        (
            "custom timesteps for a solver",
            SamplerSettings {
                custom_timesteps: Some(vec![500, 0]),
                ..run(Method::EulerAncestral)
            },
            Want::Setting("custom_timesteps", "only DDPM"),
        ),
    ];
    for (case, settings, want) in settings {
        check(case, "", sampler.timesteps(&settings), want);
    }
    // Euler ancestral has no sample prediction in diffusers.
    let sample_prediction = Sampler::new(
        gpu(),
        SchedulerConfig {
            prediction_type: diffusion_wgpu::PredictionType::Sample,
            ..Default::default()
        },
    )
    .unwrap();
    check(
        "Euler ancestral with the sample prediction",
        "",
        sample_prediction.timesteps(&run(Method::EulerAncestral)),
        Want::Setting("prediction_type", "sample is not supported"),
    );

    // Image-to-image.
    for (case, strength, text) in [
        ("strength 0", 0.0, "0 is not in (0, 1]"),
        ("negative strength", -0.5, "-0.5 is not in (0, 1]"),
        ("strength above 1", 1.5, "1.5 is not in (0, 1]"),
        ("NaN strength", f64::NAN, "NaN is not in (0, 1]"),
        ("strength keeping no step", 0.05, "keeps no step of 10"),
    ] {
        let result = sampler.img2img_timesteps(&run(Method::ddim(0.0)), strength);
        check(case, "", result, Want::Setting("strength", text));
    }
    let model = diffusion_wgpu::LinearNoiseModel::new(0.1);
    let result = sampler.start_from_image(
        &model,
        [1, 3, 8, 8],
        &run(Method::UniPc(UniPcOptions::default())),
        &[0.0; 3 * 8 * 4],
        0.5,
        diffusion_wgpu::NoiseSource::Seed(1),
    );
    check(
        "init image of the wrong size",
        "",
        result,
        Want::Shape("init image", "96 values"),
    );

    // Inpainting.
    let image = [0.0f32; 2 * 3 * 8 * 8];
    let inpaint = |mask: &[f32], options: &diffusion_wgpu::RePaintOptions| {
        sampler.inpaint(
            &model,
            [2, 3, 8, 8],
            10,
            options,
            &image,
            mask,
            diffusion_wgpu::NoiseSource::Seed(1),
            &mut |_| {},
        )
    };
    let options = diffusion_wgpu::RePaintOptions::default();
    check(
        "mask of the wrong size",
        "",
        inpaint(&[1.0; 2 * 8 * 4], &options),
        Want::Shape("inpainting mask", "64 values"),
    );
    check(
        "jump length 0",
        "",
        inpaint(
            &[1.0; 2 * 8 * 8],
            &diffusion_wgpu::RePaintOptions {
                jump_length: 0,
                ..options
            },
        ),
        Want::Setting("jump_length / jump_n_sample", "at least 1"),
    );
    check(
        "RePaint eta 2",
        "",
        inpaint(
            &[1.0; 2 * 8 * 8],
            &diffusion_wgpu::RePaintOptions {
                eta: 2.0,
                ..options
            },
        ),
        Want::Setting("eta", "2 is not in [0, 1]"),
    );
}
