//! U-Net configurations beyond the cifar-style fixture, against diffusers' fully-f64 forward
//! (tests/fixtures/diffusers/unet_variants, made by tools/fixtures/make_unet_variants.py):
//! scale_shift time embedding with several heads, attn_norm_num_groups, center_input_sample
//! and a mid_block_scale_factor; class conditioning with a custom time_embedding_dim; no mid
//! block and a 2C (learned sigma) output. Every top-level activation is checked too, on the
//! adapter's kernels and on the GPU kernels with the group norms applied inside the
//! convolutions (`Tuning::norm_in_conv`, which folds the scale_shift terms into the norm map).

mod common;

use std::sync::Arc;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::{Gpu, GpuOptions, Tuning, Unet};

const TOLERANCE: f64 = 2e-5;

#[test]
fn variants_match_diffusers_f64() {
    let norm_in_conv = Tuning {
        norm_in_conv: true,
        ..Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu)
    };
    let fused = Arc::new(
        Gpu::new(&GpuOptions::default())
            .unwrap()
            .with_tuning(norm_in_conv),
    );
    for (gpu, name) in [
        "scale_shift_multihead",
        "class_conditional",
        "no_mid_learned_sigma",
    ]
    .into_iter()
    .flat_map(|name| [(gpu(), name), (fused.clone(), name)])
    {
        let refs = fixture(&format!(
            "diffusers/unet_variants/{name}/forward.safetensors"
        ));
        let dir = format!(
            "{}/tests/fixtures/diffusers/unet_variants/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let unet = Unet::load(gpu.clone(), &dir).unwrap();
        let x = &refs["x"];
        let shape = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
        let timesteps: Vec<u32> = refs["timesteps"].u32();
        let labels: Option<Vec<u32>> = refs.get("class_labels").map(|l| l.u32());
        let activations = unet
            .forward_activations(&x.f32(), shape, &timesteps, labels.as_deref())
            .unwrap();
        for activation in &activations {
            let reference = &refs[&format!("act_f64.{}", activation.name)];
            let error = rel_l2(&activation.data, &reference.data);
            assert!(error < TOLERANCE, "{name} {}: {error:.2e}", activation.name);
        }
        let eps = unet
            .forward(&x.f32(), shape, &timesteps, labels.as_deref())
            .unwrap();
        let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
        println!(
            "{name} ({:?}, norm in conv {}): eps {error:.2e} ({} activations checked)",
            gpu.tuning().block_size,
            gpu.tuning().norm_in_conv,
            activations.len()
        );
        assert!(error < TOLERANCE, "{name}: {error:.2e}");
    }
}
