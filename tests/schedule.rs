//! Schedule tables and timestep lists against diffusers' (tests/fixtures/diffusers).

mod common;

use common::{fixture, rel_l2_f64};
use diffusion_wgpu::{
    BetaSchedule, Error, PrevTimestep, Schedule, SchedulerConfig, TimestepSpacing,
};

#[test]
fn tables_match_diffusers_for_every_beta_schedule() {
    let refs = fixture("diffusers/sched_tables.safetensors");
    for (name, schedule) in [
        ("linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
    ] {
        let tables = Schedule::new(SchedulerConfig {
            beta_schedule: schedule,
            ..Default::default()
        })
        .unwrap();
        for scheduler in ["ddpm", "ddim"] {
            let betas = &refs[&format!("{scheduler}.{name}.betas")].data;
            let cumprod = &refs[&format!("{scheduler}.{name}.alphas_cumprod")].data;
            let e_betas = rel_l2_f64(tables.betas(), betas);
            let e_cumprod = rel_l2_f64(tables.alphas_cumprod(), cumprod);
            println!("{scheduler}.{name}: betas {e_betas:.2e}, alphas_cumprod {e_cumprod:.2e}");
            assert!(e_betas < 1e-6 && e_cumprod < 1e-6, "{scheduler}.{name}");
            // The recipes in QUIRKS.md reproduce torch exactly.
            assert_eq!(
                tables.betas(),
                &betas[..],
                "{scheduler}.{name} betas not bit-exact"
            );
            assert_eq!(
                tables.alphas_cumprod(),
                &cumprod[..],
                "{name} cumprod not bit-exact"
            );
        }
    }
}

#[test]
fn ddim_timesteps_match_diffusers_for_every_case() {
    let refs = fixture("diffusers/timesteps.safetensors");
    let mut cases = 0;
    for n in [10, 50, 100, 7, 16, 30] {
        for (name, spacing) in [
            ("leading", TimestepSpacing::Leading),
            ("trailing", TimestepSpacing::Trailing),
            ("linspace", TimestepSpacing::Linspace),
        ] {
            for offset in [0, 1] {
                for alpha_to_one in [false, true] {
                    let key = format!("ddim.N{n}.{name}.off{offset}.a1{}", u8::from(alpha_to_one));
                    let schedule = Schedule::new(SchedulerConfig {
                        timestep_spacing: spacing,
                        steps_offset: offset,
                        set_alpha_to_one: alpha_to_one,
                        ..Default::default()
                    })
                    .unwrap();
                    let timesteps = schedule.timesteps(n).unwrap();
                    assert_eq!(
                        timesteps,
                        refs[&format!("{key}.timesteps")].usize(),
                        "{key}"
                    );
                    let prev: Vec<i64> = (0..n)
                        .map(|i| {
                            schedule.ddim_prev_timestep(&timesteps, i, PrevTimestep::Diffusers)
                        })
                        .collect();
                    assert_eq!(prev, refs[&format!("{key}.prev_timesteps")].i64(), "{key}");
                    let alpha_t: Vec<f64> = timesteps
                        .iter()
                        .map(|&t| schedule.alphas_cumprod()[t])
                        .collect();
                    assert_eq!(alpha_t, refs[&format!("{key}.alpha_prod_t")].data, "{key}");
                    let alpha_prev: Vec<f64> =
                        prev.iter().map(|&t| schedule.ddim_alpha_prod(t)).collect();
                    assert_eq!(
                        alpha_prev,
                        refs[&format!("{key}.alpha_prod_t_prev")].data,
                        "{key}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 72);
}

#[test]
fn ddpm_timesteps_match_diffusers() {
    let refs = fixture("diffusers/timesteps.safetensors");
    let schedule = Schedule::new(SchedulerConfig::default()).unwrap();
    for n in [1000, 50, 10] {
        let timesteps = schedule.timesteps(n).unwrap();
        let key = format!("ddpm.N{n}.leading.off0");
        assert_eq!(
            timesteps,
            refs[&format!("{key}.timesteps")].usize(),
            "{key}"
        );
        let prev: Vec<i64> = (0..n)
            .map(|i| schedule.ddim_prev_timestep(&timesteps, i, PrevTimestep::NextInList))
            .collect();
        assert_eq!(prev, refs[&format!("{key}.prev_timesteps")].i64(), "{key}");
    }
}

#[test]
fn next_in_list_rule_differs_from_diffusers_only_off_leading() {
    let schedule = |spacing| {
        Schedule::new(SchedulerConfig {
            timestep_spacing: spacing,
            ..Default::default()
        })
        .unwrap()
    };
    let linspace = schedule(TimestepSpacing::Linspace);
    let timesteps = linspace.timesteps(10).unwrap();
    assert_eq!(timesteps[..2], [999, 888]);
    assert_eq!(
        linspace.ddim_prev_timestep(&timesteps, 0, PrevTimestep::Diffusers),
        899
    );
    assert_eq!(
        linspace.ddim_prev_timestep(&timesteps, 0, PrevTimestep::NextInList),
        888
    );
    assert_eq!(
        linspace.ddim_prev_timestep(&timesteps, 9, PrevTimestep::NextInList),
        -1
    );
    let leading = schedule(TimestepSpacing::Leading);
    let timesteps = leading.timesteps(10).unwrap();
    for i in 0..10 {
        let alpha = |rule| leading.ddim_alpha_prod(leading.ddim_prev_timestep(&timesteps, i, rule));
        assert_eq!(
            alpha(PrevTimestep::Diffusers),
            alpha(PrevTimestep::NextInList)
        );
    }
}

fn config_error(json: &str) -> (String, String) {
    match SchedulerConfig::from_json_str(json, "test.json") {
        Err(Error::Config { key, message, .. }) => (key, message),
        other => panic!("expected a config error for {json}, got {other:?}"),
    }
}

#[test]
fn config_json_reads_diffusers_files_and_names_bad_keys() {
    let cifar = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/diffusers/ddpm_cifar10_32/scheduler_config.json"
    ))
    .unwrap();
    let config = SchedulerConfig::from_json_str(&cifar, "cifar").unwrap();
    assert_eq!(
        config.variance_type,
        diffusion_wgpu::VarianceType::FixedLarge
    );
    assert!(config.clip_sample);
    assert_eq!(config.num_train_timesteps, 1000);

    let config =
        SchedulerConfig::from_json_str(r#"{"skip_prk_steps": true, "beta_end": 0.012}"#, "x")
            .unwrap();
    assert_eq!(
        config.beta_end, 0.012,
        "unknown keys are ignored, known ones read"
    );

    for (json, key) in [
        (r#"{"beta_schedule": "cosine"}"#, "beta_schedule"),
        (r#"{"clip_sample": "yes"}"#, "clip_sample"),
        (r#"{"num_train_timesteps": -5}"#, "num_train_timesteps"),
        (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps"),
        (r#"{"beta_start": -0.1}"#, "beta_start"),
        (r#"{"beta_end": 1.5}"#, "beta_end"),
        (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
        (r#"{"trained_betas": "none"}"#, "trained_betas"),
        (r#"{"prediction_type": "eps"}"#, "prediction_type"),
        (r#"{"variance_type": "fixed"}"#, "variance_type"),
        (r#"{"timestep_spacing": "even"}"#, "timestep_spacing"),
        (r#"{"clip_sample_range": 0}"#, "clip_sample_range"),
        (
            r#"{"dynamic_thresholding_ratio": 1.5}"#,
            "dynamic_thresholding_ratio",
        ),
        (r#"{"steps_offset": 1000}"#, "steps_offset"),
        ("[1, 2]", "(file)"),
        ("{ not json", "(file)"),
    ] {
        let (found_key, message) = config_error(json);
        assert_eq!(found_key, key, "{json}: {message}");
        assert!(!message.is_empty());
    }
}

#[test]
fn bad_betas_are_rejected_with_their_index() {
    let mut betas = vec![0.01; 10];
    betas[3] = f64::NAN;
    let nan = SchedulerConfig {
        num_train_timesteps: 10,
        trained_betas: Some(betas.clone()),
        ..Default::default()
    };
    let message = Schedule::new(nan).unwrap_err().to_string();
    assert!(
        message.contains("trained_betas") && message.contains("entry 3"),
        "{message}"
    );
    betas[3] = -0.01;
    let negative = SchedulerConfig {
        num_train_timesteps: 10,
        trained_betas: Some(betas),
        ..Default::default()
    };
    assert!(
        matches!(Schedule::new(negative), Err(Error::Config { key, .. }) if key == "trained_betas")
    );
    let short = SchedulerConfig {
        trained_betas: Some(vec![0.01; 999]),
        ..Default::default()
    };
    let message = Schedule::new(short).unwrap_err().to_string();
    assert!(message.contains("expected 1000 values"), "{message}");
}

#[test]
fn step_counts_outside_one_to_t_are_rejected() {
    let schedule = Schedule::new(SchedulerConfig::default()).unwrap();
    for n in [0, 1001] {
        assert!(matches!(
            schedule.timesteps(n),
            Err(Error::InvalidSetting {
                setting: "num_inference_steps",
                ..
            })
        ));
    }
    assert_eq!(schedule.timesteps(1000).unwrap().len(), 1000);
    let offset = Schedule::new(SchedulerConfig {
        steps_offset: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(
        offset.timesteps(1000).is_err(),
        "timestep 1000 is past the table"
    );
}
