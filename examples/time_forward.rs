use std::sync::Arc;
use std::time::Instant;
use diffusion_wgpu::{Gpu, GpuOptions, Unet};
fn main() {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let unet = Unet::load(gpu, "tests/fixtures/diffusers/unet_small").unwrap();
    let b = 2;
    let x = vec![0.1f32; b * 3 * 32 * 32];
    for i in 0..3 {
        let t = Instant::now();
        unet.forward(&x, [b, 3, 32, 32], &vec![500; b], None).unwrap();
        println!("forward {i}: {:.2} s", t.elapsed().as_secs_f64());
    }
}
