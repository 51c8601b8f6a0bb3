//! Fuzzes the scheduler config parser, the schedule tables and the timestep lists.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    diffusion_wgpu_fuzz::scheduler_config(data);
});
