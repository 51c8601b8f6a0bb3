//! Fuzzes the checkpoint loader: config.json parsing and safetensors decoding (no GPU).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    diffusion_wgpu_fuzz::checkpoint(data);
});
