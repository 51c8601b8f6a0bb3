//! The bundled Fashion-MNIST model, embedded in the binary, against a forward pass diffusers
//! made from the same weights (tests/fixtures/diffusers/bundled_forward.safetensors, by
//! tools/fixtures/make_bundled_ref.py).

mod common;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::Unet;

#[test]
fn bundled_model_matches_diffusers() {
    let refs = fixture("diffusers/bundled_forward.safetensors");
    let unet = Unet::bundled(gpu()).unwrap();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let eps = unet
        .forward(&refs["x"].f32(), [2, 1, 28, 28], &timesteps, None)
        .unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    println!("bundled model: eps {error:.2e} from diffusers' f64 forward");
    assert!(error < 2e-5, "{error:.2e}");
}
