//! Where a recorded graph spends its GPU time: every dispatch timed (GPU timestamps where the
//! device has them, otherwise each dispatch submitted and waited for alone) and summed per
//! kernel family, with the FLOPs each family does.

use std::time::Instant;

use super::attention::plain_matmul;
use super::graph::{Graph, GraphBuilder, MatmulShape, TensorId};
use super::{RandomWeights, TensorSource};
use crate::error::Result;
use crate::gpu::{Gpu, GpuTimer};

/// How a [`ForwardProfile`] was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileTimer {
    /// GPU timestamps between the dispatches of one pass (`TIMESTAMP_QUERY_INSIDE_PASSES`).
    Timestamps,
    /// Host wall clock around each dispatch submitted and waited for alone: includes a
    /// submission's overhead per dispatch, so small kernels look slower than they are.
    WallClockPerDispatch,
}

/// One kernel family's share of a forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyTime {
    /// The kernel family (`conv2d`, `group_norm`, `attention.matmul`, ...).
    pub family: String,
    /// Dispatches of this family in one forward pass.
    pub dispatches: usize,
    /// GPU seconds per forward pass (median over the repeats, per dispatch).
    pub seconds: f64,
    /// Floating-point operations per forward pass (2 per multiply-add).
    pub flops: u64,
    /// The products of this family's dispatch with the most FLOPs, if it computes any.
    pub heaviest: Option<MatmulShape>,
}

/// The per-family GPU time of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardProfile {
    /// How the times were taken.
    pub timer: ProfileTimer,
    /// Families, slowest first.
    pub families: Vec<FamilyTime>,
}

impl ForwardProfile {
    /// GPU seconds of all dispatches.
    pub fn seconds(&self) -> f64 {
        self.families.iter().map(|f| f.seconds).sum()
    }

    /// Dispatches of the kernel family `family` (`linear`, `group_norm.layer_norm_channels`)
    /// in one forward pass; 0 when it has none.
    pub fn dispatches(&self, family: &str) -> usize {
        self.families
            .iter()
            .filter(|f| f.family == family)
            .map(|f| f.dispatches)
            .sum()
    }
}

impl ProfileTimer {
    /// How the report names this timer.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timestamps => "GPU timestamps",
            Self::WallClockPerDispatch => "wall clock per dispatch",
        }
    }
}

impl FamilyTime {
    /// GFLOP/s, when the family computes products and took time.
    pub fn gflops(&self) -> Option<f64> {
        (self.flops > 0 && self.seconds > 0.0).then(|| self.flops as f64 / self.seconds * 1e-9)
    }
}

/// The report's lines: the total, then one line per family.
impl std::fmt::Display for ForwardProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  GPU time by kernel family ({}), {:.2} ms in all:",
            self.timer.name(),
            self.seconds() * 1e3
        )?;
        for family in &self.families {
            let rate = family
                .gflops()
                .map_or(String::new(), |g| format!(", {g:.2} GFLOP/s"));
            writeln!(
                f,
                "    {:<20} {:>4} dispatches {:>10.2} ms {:>5.1}%{rate}",
                family.family,
                family.dispatches,
                family.seconds * 1e3,
                family.seconds / self.seconds() * 100.0
            )?;
        }
        Ok(())
    }
}

/// Times every dispatch of `graph` `repeats` times (after filling `inputs` with random
/// values) and sums the median times per kernel family.
pub(crate) fn profile_graph(
    gpu: &Gpu,
    graph: &Graph,
    inputs: &[TensorId],
    repeats: usize,
) -> Result<ForwardProfile> {
    let (timer, times) = time_dispatches(gpu, graph, inputs, repeats)?;
    let mut families: Vec<FamilyTime> = Vec::new();
    for ((family, work), seconds) in graph.op_work().zip(times) {
        let flops = work.map_or(0, |w| w.flops());
        match families.iter_mut().find(|f| f.family == family) {
            Some(entry) => {
                entry.dispatches += 1;
                entry.seconds += seconds;
                entry.flops += flops;
                if flops > entry.heaviest.map_or(0, |w| w.flops()) {
                    entry.heaviest = work;
                }
            }
            None => families.push(FamilyTime {
                family,
                dispatches: 1,
                seconds,
                flops,
                heaviest: work,
            }),
        }
    }
    families.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    Ok(ForwardProfile { timer, families })
}

/// GPU seconds of one plain row-major matrix product of `shape` (attention.wgsl's
/// register-blocked matmul, on random operands), median of `repeats`: the ceiling `bench` compares the
/// convolutions with.
pub fn profile_gemm(gpu: &Gpu, shape: MatmulShape, repeats: usize) -> Result<f64> {
    let mut g = GraphBuilder::new(gpu);
    let count = shape.count as usize;
    let (m, n, k) = (shape.m as usize, shape.n as usize, shape.k as usize);
    let a = g.input(count * m * k, "gemm a")?;
    let b = g.input(count * k * n, "gemm b")?;
    let c = g.tensor(count * m * n, "gemm c")?;
    g.mark_output(c);
    plain_matmul(&mut g, shape, [a, b, c]);
    let graph = g.finish();
    let (_, times) = time_dispatches(gpu, &graph, &[a, b], repeats)?;
    Ok(times.iter().sum())
}

/// Fills `inputs` with random values, runs `graph` `repeats` times with every dispatch timed,
/// and returns how it timed them and each dispatch's median seconds.
fn time_dispatches(
    gpu: &Gpu,
    graph: &Graph,
    inputs: &[TensorId],
    repeats: usize,
) -> Result<(ProfileTimer, Vec<f64>)> {
    let mut random = RandomWeights::new(0);
    for &id in inputs {
        let buffer = graph.buffer(id);
        let values = random.take("profile input", &[buffer.size() as usize / 4])?;
        gpu.queue()
            .write_buffer(buffer, 0, bytemuck::cast_slice(&values));
    }
    let ops = graph.len();
    let repeats = repeats.max(1);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(repeats); ops];
    let timer = GpuTimer::new(gpu, ops as u32 + 1)?;
    gpu.wait_idle("profiling")?;
    for _ in 0..repeats {
        match &timer {
            Some(timer) => {
                let mut encoder = gpu.device().create_command_encoder(&Default::default());
                graph.record_timed(
                    &mut encoder.begin_compute_pass(&Default::default()),
                    timer,
                    0,
                );
                gpu.queue().submit([encoder.finish()]);
                let intervals = timer.intervals(gpu, ops as u32 + 1)?;
                for (times, seconds) in samples.iter_mut().zip(intervals) {
                    times.push(seconds);
                }
            }
            None => {
                for (op, times) in samples.iter_mut().enumerate() {
                    let start = Instant::now();
                    let mut encoder = gpu.device().create_command_encoder(&Default::default());
                    graph.record_op(&mut encoder.begin_compute_pass(&Default::default()), op);
                    gpu.queue().submit([encoder.finish()]);
                    gpu.wait_idle("profiling")?;
                    times.push(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    let kind = match timer {
        Some(_) => ProfileTimer::Timestamps,
        None => ProfileTimer::WallClockPerDispatch,
    };
    let medians = samples
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        })
        .collect();
    Ok((kind, medians))
}
