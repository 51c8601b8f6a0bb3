//! `bench --soak N`: N sampling runs back to back on one sampler and model, with the process's
//! resident memory and the device's live GPU objects read after a warm-up run and then at
//! intervals, to show that long benchmark loops neither leak nor grow.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::unet::Unet;
use crate::sampler::{NoiseSource, Sampler, SamplerSettings};

/// Resources in use at one point of a soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakPoint {
    /// Runs finished so far (1 = after the warm-up run).
    pub runs: usize,
    /// The process's resident set in KiB (`VmRSS` of /proc/self/status; `None` off Linux).
    pub resident_kib: Option<u64>,
    /// Live wgpu buffers on the device.
    pub buffers: isize,
    /// Bytes in those buffers.
    pub buffer_bytes: isize,
    /// Live textures, bind groups and compute pipelines, together.
    pub other_objects: isize,
}

/// The figures of a soak.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakReport {
    /// Snapshots from the warm-up run to the last run.
    pub points: Vec<SoakPoint>,
    /// Wall-clock seconds of all runs after the warm-up.
    pub seconds: f64,
}

/// Runs `runs` DDIM runs of `settings` with `unet` (seeds 0, 1, ...) on a batch of `shape`,
/// taking a snapshot after the first and after every `runs / 10`.
pub fn soak(
    unet: &Unet,
    sampler: &Sampler,
    shape: [usize; 4],
    settings: &SamplerSettings,
    runs: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<SoakReport> {
    let gpu = &**unet.gpu();
    let run = |seed: u64| -> Result<()> {
        sampler.sample(unet, shape, settings, NoiseSource::Seed(seed), &mut |_| {})?;
        Ok(())
    };
    run(0)?;
    let mut points = vec![snapshot(gpu, 1)?];
    let every = (runs / 10).max(1);
    let start = Instant::now();
    for done in 2..=runs.max(1) {
        run(done as u64)?;
        progress(done);
        if done % every == 0 || done == runs {
            points.push(snapshot(gpu, done)?);
        }
    }
    Ok(SoakReport {
        points,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn snapshot(gpu: &Gpu, runs: usize) -> Result<SoakPoint> {
    // Let wgpu free what finished work released before counting.
    gpu.wait_idle("soak snapshot")?;
    let counters = gpu.device().get_internal_counters().hal;
    Ok(SoakPoint {
        runs,
        resident_kib: resident_kib(),
        buffers: counters.buffers.read(),
        buffer_bytes: counters.buffer_memory.read(),
        other_objects: counters.textures.read()
            + counters.bind_groups.read()
            + counters.compute_pipelines.read(),
    })
}

/// `VmRSS` from /proc/self/status, in KiB.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl SoakReport {
    /// The report as text: one line per snapshot.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "runs  resident KiB  buffers  buffer bytes  textures+bind groups+pipelines\n",
        );
        for p in &self.points {
            out += &format!(
                "{:>5} {:>13} {:>8} {:>13} {:>10}\n",
                p.runs,
                p.resident_kib.map_or("-".into(), |k| k.to_string()),
                p.buffers,
                p.buffer_bytes,
                p.other_objects
            );
        }
        out + &format!("{:.1} s for the runs after the first\n", self.seconds)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let points: Vec<serde_json::Value> = self
            .points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "runs": p.runs,
                    "resident_kib": p.resident_kib,
                    "buffers": p.buffers,
                    "buffer_bytes": p.buffer_bytes,
                    "other_objects": p.other_objects,
                })
            })
            .collect();
        serde_json::json!({ "soak": points, "seconds": self.seconds })
    }
}
