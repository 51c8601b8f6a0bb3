//! `Precision::Mixed` (f16 convolution operands, f32 accumulation and activations) against
//! diffusers: the U-Net forward of tests/fixtures/diffusers/unet_small_forward and of the
//! bundled model within 2e-3 relative L2 of diffusers' f64 result, on both kernel sets, and
//! the conditional U-Net of both tiny SD pipelines likewise; the
//! 10-step DDIM loop of unet_small_sampling within 5e-2 of diffusers' f32 run (a random-weight
//! model: its loop amplifies the forward's error about 35x, as it amplifies f32 rounding:
//! diffusers' own f32 and f64 loops end 3.5e-5 apart); the bundled (trained) model's 10-step
//! DDIM loop within 1e-2 of the same loop in f32 (which the f32 tests hold to diffusers); and the typed
//! error for mixed precision on a device without SHADER_F16. On an adapter with cooperative
//! matrices every mixed test runs on them, and one more checks that they ran and agree with
//! the FMA body (on others it reports that there is nothing to check). Each mixed result is also held
//! to differ from diffusers by more than the f32 path does (over 1e-5), so a silent fallback to
//! f32 fails. The errors are printed (`--nocapture`).

mod common;

use std::sync::{Arc, OnceLock};

use common::{conditional_eps, fixture, gpu, rel_l2};
use diffusion_wgpu::{
    CooperativeMatrix, Error, Gpu, GpuOptions, NoiseSource, Precision, Sampler, SamplerSettings,
    SchedulerConfig, Tuning, Unet,
};

/// The forward passes' bound (relative L2 against diffusers' f64 forward).
const FORWARD_TOLERANCE: f64 = 2e-3;
/// The random-weight unet_small's 10-step DDIM loop's bound (relative L2 against diffusers'
/// f32 loop).
const LOOP_TOLERANCE: f64 = 5e-2;
/// The bundled model's 10-step DDIM loop's bound (relative L2 against the f32 loop).
const BUNDLED_LOOP_TOLERANCE: f64 = 1e-2;
/// Below this the f16 path was not taken (the f32 path is within 2e-5, about 1e-6 here).
const SURELY_MIXED: f64 = 1e-5;

fn fixture_dir(name: &str) -> String {
    format!(
        "{}/tests/fixtures/diffusers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A device with mixed precision and the adapter's own kernel set.
fn mixed() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(open_mixed())).clone()
}

fn open_mixed() -> Gpu {
    let _ = env_logger::builder().is_test(true).try_init();
    let options = GpuOptions {
        precision: Precision::Mixed,
        ..Default::default()
    };
    Gpu::new(&options).unwrap_or_else(|e| panic!("{e}"))
}

fn check(what: &str, error: f64, tolerance: f64) {
    println!("{what}: {error:.2e}");
    assert!(
        error < tolerance,
        "{what}: {error:.2e} over {tolerance:.0e}"
    );
    assert!(
        error > SURELY_MIXED,
        "{what}: {error:.2e}: as exact as f32, so the f16 kernels did not run"
    );
}

#[test]
fn unet_forward_matches_diffusers_within_2e_3_on_both_kernel_sets() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let cpu_set = Tuning::for_device_type(wgpu::DeviceType::Cpu);
    let gpu_set = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    for (set, tuning) in [("CPU kernel set", cpu_set), ("GPU kernel set", gpu_set)] {
        let gpu = Arc::new(open_mixed().with_tuning(tuning));
        for folder in ["unet_small", "unet_small_legacy_keys"] {
            let unet = Unet::load(gpu.clone(), fixture_dir(folder)).unwrap();
            let eps = unet.forward(&x, [2, 3, 32, 32], &timesteps, None).unwrap();
            let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
            check(
                &format!("{folder}, {set}: eps vs f64"),
                error,
                FORWARD_TOLERANCE,
            );
        }
    }
}

#[test]
fn bundled_model_matches_diffusers_within_2e_3() {
    let refs = fixture("diffusers/bundled_forward.safetensors");
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let unet = Unet::bundled(mixed()).unwrap();
    let eps = unet
        .forward(&refs["x"].f32(), [2, 1, 28, 28], &timesteps, None)
        .unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    check("bundled model: eps vs f64", error, FORWARD_TOLERANCE);
}

/// The conditional U-Net (SD 1.x- and 2.x-style tiny pipelines): its convolutions and the
/// transformers' projections (1x1 convolutions) take f16 operands.
#[test]
fn conditional_unet_matches_diffusers_within_2e_3() {
    for (pipeline, refs) in [("sd1_tiny", "sd/sd1_refs"), ("sd2_tiny", "sd/sd2_refs")] {
        let (eps, refs) = conditional_eps(mixed(), pipeline, &format!("{refs}.safetensors"));
        let error = rel_l2(&eps, &refs["unet.eps_f64"].data);
        check(
            &format!("{pipeline} conditional U-Net: eps vs f64"),
            error,
            FORWARD_TOLERANCE,
        );
    }
}

#[test]
fn ddim_10_steps_match_diffusers_within_5e_2() {
    let refs = fixture("diffusers/unet_small_sampling.safetensors");
    let unet = Unet::load(mixed(), fixture_dir("unet_small")).unwrap();
    let scheduler =
        SchedulerConfig::from_file(fixture_dir("ddpm_cifar10_32/scheduler_config.json")).unwrap();
    let sampler = Sampler::new(mixed(), scheduler).unwrap();
    let x_t = refs["x_T"].f32();
    let noise = NoiseSource::Explicit {
        initial: &x_t,
        per_step: &[],
    };
    let settings = SamplerSettings::ddim(10, 0.0);
    let x0 = sampler
        .sample(&unet, [2, 3, 32, 32], &settings, noise, &mut |_| {})
        .unwrap();
    let error = rel_l2(&x0, &refs["ddim10.x0_f32"].data);
    check("DDIM 10 steps: x0 vs f32", error, LOOP_TOLERANCE);
}

/// x0 of the bundled model's 10-step DDIM loop from seeded noise, on `gpu`.
fn bundled_ddim(gpu: Arc<Gpu>) -> Vec<f32> {
    let unet = Unet::bundled(gpu.clone()).unwrap();
    let scheduler = diffusion_wgpu::model::unet::bundled_scheduler_config().unwrap();
    let sampler = Sampler::new(gpu, scheduler).unwrap();
    let settings = SamplerSettings::ddim(10, 0.0);
    sampler
        .sample(
            &unet,
            [4, 1, 28, 28],
            &settings,
            NoiseSource::Seed(7),
            &mut |_| {},
        )
        .unwrap()
}

#[test]
fn bundled_ddim_10_steps_match_f32_within_1e_2() {
    let f32_run: Vec<f64> = bundled_ddim(gpu()).iter().map(|&v| f64::from(v)).collect();
    let error = rel_l2(&bundled_ddim(mixed()), &f32_run);
    check(
        "bundled model, DDIM 10 steps: x0 vs f32",
        error,
        BUNDLED_LOOP_TOLERANCE,
    );
}

/// Where the adapter has cooperative matrices (tensor cores), mixed precision runs the tiled
/// convolutions on them, within the forward's bound of diffusers' f64 result, and
/// `CooperativeMatrix::Off` runs none of them. Elsewhere it says so and checks nothing more
/// (the FMA body is what the other tests here run). The two bodies' forwards are not compared
/// here: on this random-weight model any change in the order of the f32 sums moves the f16
/// rounding of later activations (two FMA plans, split-K 3 against none, end 8.0e-4 apart,
/// the cooperative matrices 7.9e-4 from the FMA body on lavapipe); src/nn/conv/tests.rs holds
/// each convolution to 1e-6 of the f64 result on the same f16 operands.
#[test]
fn cooperative_matrices_run_where_the_adapter_has_them() {
    let coop = mixed();
    let Some(config) = coop.cooperative_matrix() else {
        let required = std::env::var_os(diffusion_wgpu::gpu::REQUIRE_COOPERATIVE_MATRIX_ENV);
        assert!(required.is_none(), "no usable cooperative matrices");
        println!("no usable cooperative matrices on this adapter: nothing to check");
        return;
    };
    let fma = Arc::new(
        Gpu::new(&GpuOptions {
            precision: Precision::Mixed,
            cooperative_matrix: CooperativeMatrix::Off,
            ..Default::default()
        })
        .unwrap(),
    );
    assert_eq!(fma.cooperative_matrix(), None);
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let run = |gpu: &Arc<Gpu>| {
        let unet = Unet::load(gpu.clone(), fixture_dir("unet_small")).unwrap();
        let families: Vec<String> = unet
            .profile_forward(2, 32, 32, 1)
            .unwrap()
            .families
            .into_iter()
            .map(|f| f.family)
            .collect();
        let eps = unet.forward(&x, [2, 3, 32, 32], &timesteps, None).unwrap();
        (eps, families)
    };
    let (eps, families) = run(&coop);
    let on_coop = |f: &String| f.starts_with("conv2d_tiled_coop");
    assert!(families.iter().any(on_coop), "{families:?}");
    assert!(
        !families.iter().any(|f| f.starts_with("conv2d_tiled_f16")),
        "{families:?}"
    );
    let (_, fma_families) = run(&fma);
    assert!(!fma_families.iter().any(on_coop), "{fma_families:?}");
    check(
        &format!(
            "unet_small on cooperative matrices ({}): eps vs f64",
            config.describe()
        ),
        rel_l2(&eps, &refs["eps_f64_pure"].data),
        FORWARD_TOLERANCE,
    );
}

/// A device opened without SHADER_F16 (f32 precision requests no feature) refuses mixed
/// precision with an error naming the feature, rather than falling back to f32.
#[test]
fn mixed_precision_without_shader_f16_is_a_typed_error() {
    let plain = gpu();
    assert!(
        !plain
            .device()
            .features()
            .contains(wgpu::Features::SHADER_F16)
    );
    let borrowed = Gpu::from_device(plain.device().clone(), plain.queue().clone());
    let error = borrowed.with_precision(Precision::Mixed).err();
    match error {
        Some(Error::MissingFeature { feature, .. }) => assert_eq!(feature, "SHADER_F16"),
        other => panic!("expected MissingFeature, got {other:?}"),
    }
    let borrowed = Gpu::from_device(plain.device().clone(), plain.queue().clone());
    assert!(borrowed.with_precision(Precision::F32).is_ok());
}
