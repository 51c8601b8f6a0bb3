//! The cases diffusers' shared fixtures do not cover, against
//! tests/fixtures/diffusers/extra_refs.safetensors (made by tools/fixtures/make_extra_refs.py
//! with diffusers 0.42.1): sigmoid, zero-SNR, trained and T=100 tables; DDPM timesteps under
//! every spacing; DDPM steps with learned, learned_range and fixed_small_log variances; DDPM
//! with custom timesteps.

mod common;

use common::{fixture, gpu, rel_l2, rel_l2_f64};
use diffusion_wgpu::{
    BetaSchedule, PrevTimestep, Sampler, SamplerSettings, Schedule, SchedulerConfig,
    TimestepSpacing, VarianceType,
};

const SHAPE: [usize; 4] = [2, 3, 8, 8];

#[test]
fn extra_tables_match_diffusers() {
    let refs = fixture("diffusers/extra_refs.safetensors");
    let cases = [
        (
            "sigmoid",
            SchedulerConfig {
                beta_schedule: BetaSchedule::Sigmoid,
                ..Default::default()
            },
        ),
        (
            "zsnr_linear",
            SchedulerConfig {
                rescale_betas_zero_snr: true,
                ..Default::default()
            },
        ),
        (
            "zsnr_scaled_linear",
            SchedulerConfig {
                beta_schedule: BetaSchedule::ScaledLinear,
                beta_start: 0.00085,
                beta_end: 0.012,
                rescale_betas_zero_snr: true,
                ..Default::default()
            },
        ),
        (
            "trained",
            SchedulerConfig {
                trained_betas: Some(refs["tables.trained.betas"].data.clone()),
                ..Default::default()
            },
        ),
        (
            "T100.linear",
            SchedulerConfig {
                num_train_timesteps: 100,
                ..Default::default()
            },
        ),
    ];
    for (name, config) in cases {
        let schedule = Schedule::new(config).unwrap();
        let betas = &refs[&format!("tables.{name}.betas")].data;
        let cumprod = &refs[&format!("tables.{name}.alphas_cumprod")].data;
        let e_betas = rel_l2_f64(schedule.betas(), betas);
        let e_cumprod = rel_l2_f64(schedule.alphas_cumprod(), cumprod);
        println!("{name}: betas {e_betas:.2e}, alphas_cumprod {e_cumprod:.2e}");
        // Zero-SNR betas are 1 - ratios of neighbouring float32 entries, which cancel: torch's
        // float32 rounding leaves diffusers' betas 3e-6 to 6e-6 (relative L2) from the exact
        // f64 values computed here. The alphas_cumprod the sampler uses agree within 1e-6.
        let beta_tolerance = if name.starts_with("zsnr") { 1e-5 } else { 1e-6 };
        assert!(e_betas < beta_tolerance && e_cumprod < 1e-6, "{name}");
    }
}

#[test]
fn ddpm_timesteps_match_diffusers_for_every_spacing() {
    let refs = fixture("diffusers/extra_refs.safetensors");
    for n in [10, 50, 7] {
        for (name, spacing) in [
            ("linspace", TimestepSpacing::Linspace),
            ("trailing", TimestepSpacing::Trailing),
            ("leading", TimestepSpacing::Leading),
        ] {
            for offset in [0, 1] {
                let key = format!("ddpm_ts.N{n}.{name}.off{offset}");
                let schedule = Schedule::new(SchedulerConfig {
                    timestep_spacing: spacing,
                    steps_offset: offset,
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
                    .map(|i| schedule.ddim_prev_timestep(&timesteps, i, PrevTimestep::NextInList))
                    .collect();
                assert_eq!(prev, refs[&format!("{key}.prev_timesteps")].i64(), "{key}");
            }
        }
    }
}

#[test]
fn ddpm_learned_and_log_variances_match_diffusers() {
    let refs = fixture("diffusers/extra_refs.safetensors");
    let x_t = refs["x_t"].f32();
    let noise = refs["noise"].f32();
    let mut worst = 0.0f64;
    for (name, variance_type, model_output) in [
        ("learned", VarianceType::Learned, "model_output_2c.learned"),
        (
            "learned_range",
            VarianceType::LearnedRange,
            "model_output_2c.learned_range",
        ),
        (
            "fixed_small_log",
            VarianceType::FixedSmallLog,
            "model_output",
        ),
    ] {
        let sampler = Sampler::new(
            gpu(),
            SchedulerConfig {
                variance_type,
                ..Default::default()
            },
        )
        .unwrap();
        let model_output = refs[model_output].f32();
        for (n, t) in [
            (1000, 999),
            (1000, 500),
            (1000, 1),
            (50, 980),
            (50, 500),
            (50, 20),
        ] {
            let key = format!("ddpm_var.N{n}.t{t}.{name}");
            let out = sampler
                .step(
                    &SamplerSettings::ddpm(n),
                    t,
                    SHAPE,
                    &x_t,
                    &model_output,
                    Some(&noise),
                )
                .unwrap();
            let e_prev = rel_l2(&out.prev_sample, &refs[&format!("{key}.prev_sample")].data);
            let e_x0 = rel_l2(
                &out.pred_original_sample,
                &refs[&format!("{key}.pred_original_sample")].data,
            );
            assert!(
                e_prev < 1e-5 && e_x0 < 1e-5,
                "{key}: {e_prev:.2e} {e_x0:.2e}"
            );
            worst = worst.max(e_prev).max(e_x0);
        }
    }
    println!("learned / learned_range / fixed_small_log: worst relative L2 error {worst:.2e}");
}

#[test]
fn ddpm_custom_timesteps_match_diffusers() {
    let refs = fixture("diffusers/extra_refs.safetensors");
    let timesteps = refs["ddpm_custom.timesteps"].usize();
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let settings = SamplerSettings {
        custom_timesteps: Some(timesteps.clone()),
        ..SamplerSettings::ddpm(timesteps.len())
    };
    assert_eq!(sampler.timesteps(&settings).unwrap(), timesteps);
    for &t in &timesteps {
        let out = sampler
            .step(
                &settings,
                t,
                SHAPE,
                &refs["x_t"].f32(),
                &refs["model_output"].f32(),
                Some(&refs["noise"].f32()),
            )
            .unwrap();
        let error = rel_l2(
            &out.prev_sample,
            &refs[&format!("ddpm_custom.t{t}.prev_sample")].data,
        );
        assert!(error < 1e-5, "custom t = {t}: {error:.2e}");
    }
}
