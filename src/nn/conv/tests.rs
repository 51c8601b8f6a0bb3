//! Every convolution kernel, layer by layer, against a CPU f64 reference over odd shapes:
//! C_out not a multiple of any tile, H * W not a multiple of any tile, stride 2 with
//! downsample padding 0 and 1, 1x1, the nearest-2x upsample, the skip concatenation read as
//! one input, and the time-embedding and residual fusions; for the tiled kernel every tile
//! unsplit and split 2, 3 and 8 ways.

use super::*;
use crate::gpu::{ConvTiles, CooperativeMatrix, GemmTile, Gpu, GpuOptions, Tuning};
use crate::nn::{TensorSource, rel_l2, run_and_read};

/// A layer to test.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    /// Channels of the first input, and of the second (0: no concatenation).
    c_first: usize,
    c_second: usize,
    c_out: usize,
    h: usize,
    w: usize,
    kernel: usize,
    sampling: Sampling,
    temb: bool,
    residual: Option<f32>,
}

const CASES: &[Case] = &[
    // 3x3, C_out 37, 9x7 pixels, both fusions.
    Case {
        batch: 2,
        c_first: 5,
        c_second: 0,
        c_out: 37,
        h: 9,
        w: 7,
        kernel: 3,
        sampling: Sampling::Same,
        temb: true,
        residual: Some(1.5),
    },
    // 1x1 (K below one step).
    Case {
        batch: 1,
        c_first: 3,
        c_second: 0,
        c_out: 70,
        h: 5,
        w: 11,
        kernel: 1,
        sampling: Sampling::Same,
        temb: false,
        residual: None,
    },
    // Stride 2, downsample_padding 1 and 0, odd sides.
    Case {
        batch: 3,
        c_first: 6,
        c_second: 0,
        c_out: 33,
        h: 9,
        w: 10,
        kernel: 3,
        sampling: Sampling::Down { pad: 1 },
        temb: false,
        residual: None,
    },
    Case {
        batch: 1,
        c_first: 6,
        c_second: 0,
        c_out: 9,
        h: 10,
        w: 7,
        kernel: 3,
        sampling: Sampling::Down { pad: 0 },
        temb: true,
        residual: None,
    },
    // Upsample: output 10x6.
    Case {
        batch: 2,
        c_first: 7,
        c_second: 0,
        c_out: 35,
        h: 5,
        w: 3,
        kernel: 3,
        sampling: Sampling::Up,
        temb: false,
        residual: None,
    },
    // Skip concatenation: 3x3 and 1x1, 300 K rows.
    Case {
        batch: 2,
        c_first: 19,
        c_second: 14,
        c_out: 40,
        h: 6,
        w: 5,
        kernel: 3,
        sampling: Sampling::Same,
        temb: true,
        residual: Some(1.0),
    },
    Case {
        batch: 2,
        c_first: 4,
        c_second: 9,
        c_out: 3,
        h: 8,
        w: 8,
        kernel: 1,
        sampling: Sampling::Same,
        temb: false,
        residual: None,
    },
];

/// Deterministic values in ±1.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Data {
    first: Vec<f32>,
    second: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    temb: Vec<f32>,
    residual: Vec<f32>,
}

/// (stride, pad, upsample, h_out, w_out).
fn geometry(case: &Case) -> (usize, usize, bool, usize, usize) {
    match case.sampling {
        Sampling::Same => (1, case.kernel / 2, false, case.h, case.w),
        Sampling::Down { pad } => (2, pad, false, case.h / 2, case.w / 2),
        Sampling::Up => (1, case.kernel / 2, true, case.h * 2, case.w * 2),
    }
}

const TEMB_STRIDE: usize = 50;

impl Data {
    fn new(case: &Case) -> Self {
        let c_in = case.c_first + case.c_second;
        let plane = case.h * case.w;
        let (_, _, _, h_out, w_out) = geometry(case);
        Self {
            first: values(case.batch * case.c_first * plane, 1),
            second: values(case.batch * case.c_second * plane, 2),
            weight: values(case.c_out * c_in * case.kernel * case.kernel, 3),
            bias: values(case.c_out, 4),
            temb: values(case.batch * TEMB_STRIDE, 5),
            residual: values(case.batch * case.c_out * h_out * w_out, 6),
        }
    }

    /// The concatenated input at (b, ci, y, x).
    fn input(&self, case: &Case, b: usize, ci: usize, y: usize, x: usize) -> f64 {
        let plane = case.h * case.w;
        let value = if ci < case.c_first {
            self.first[(b * case.c_first + ci) * plane + y * case.w + x]
        } else {
            let ci = ci - case.c_first;
            self.second[(b * case.c_second + ci) * plane + y * case.w + x]
        };
        f64::from(value)
    }

    /// The layer in f64: PyTorch's conv2d (after a nearest 2x upsample), bias, temb, residual.
    fn reference(&self, case: &Case) -> Vec<f64> {
        let c_in = case.c_first + case.c_second;
        let (stride, pad, up, h_out, w_out) = geometry(case);
        let (h_virtual, w_virtual) = (case.h << usize::from(up), case.w << usize::from(up));
        let k = case.kernel;
        let mut out = Vec::new();
        for b in 0..case.batch {
            for co in 0..case.c_out {
                for oy in 0..h_out {
                    for ox in 0..w_out {
                        let mut sum = f64::from(self.bias[co]);
                        if case.temb {
                            sum += f64::from(self.temb[b * TEMB_STRIDE + co]);
                        }
                        for ci in 0..c_in {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pad as isize;
                                    let ix = (ox * stride + kx) as isize - pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= h_virtual as isize
                                        || ix >= w_virtual as isize
                                    {
                                        continue;
                                    }
                                    let (y, x) = (
                                        iy as usize >> usize::from(up),
                                        ix as usize >> usize::from(up),
                                    );
                                    let w = self.weight[((co * c_in + ci) * k + ky) * k + kx];
                                    sum += f64::from(w) * self.input(case, b, ci, y, x);
                                }
                            }
                        }
                        if let Some(factor) = case.residual {
                            let at = out.len();
                            sum = (f64::from(self.residual[at]) + sum) / f64::from(factor);
                        }
                        out.push(sum);
                    }
                }
            }
        }
        out
    }
}

/// Hands out the case's weight and bias.
struct Given<'a>(&'a Data);

impl TensorSource for Given<'_> {
    fn take(&mut self, name: &str, _shape: &[usize]) -> Result<Vec<f32>> {
        Ok(match name {
            "conv.weight" => self.0.weight.clone(),
            _ => self.0.bias.clone(),
        })
    }
}

/// The layer on `gpu`.
fn run(gpu: &Gpu, case: &Case, data: &Data) -> Vec<f32> {
    let c_in = case.c_first + case.c_second;
    let mut source = Given(data);
    let mut path = WeightPath::new(gpu, &mut source);
    let conv = Conv::load(
        &mut path.pp("conv"),
        c_in,
        case.c_out,
        case.kernel,
        case.sampling,
    )
    .unwrap();
    let mut graph = GraphBuilder::new(gpu);
    let map = |graph: &mut GraphBuilder<'_>, channels: usize, name: &str| FeatureMap {
        id: graph
            .input(case.batch * channels * case.h * case.w, name)
            .unwrap(),
        batch: case.batch,
        channels,
        height: case.h,
        width: case.w,
    };
    let first = map(&mut graph, case.c_first, "first");
    let second = map(&mut graph, case.c_second, "second");
    let temb = graph.input(data.temb.len(), "temb").unwrap();
    let residual = graph.input(data.residual.len(), "residual").unwrap();
    let extras = ConvExtras {
        temb: case.temb.then_some(crate::nn::ChannelTerm {
            id: temb,
            stride: TEMB_STRIDE,
            offset: 0,
        }),
        residual: case.residual.map(|factor| (residual, factor)),
        ..ConvExtras::default()
    };
    let out = match case.c_second {
        0 => conv.record(&mut graph, first, extras, "conv"),
        _ => conv.record_concat(&mut graph, first, second, extras, "conv"),
    }
    .unwrap();
    graph.mark_output(out.id);
    let graph = graph.finish();
    for (id, values) in [
        (first.id, &data.first),
        (second.id, &data.second),
        (temb, &data.temb),
        (residual, &data.residual),
    ] {
        if !values.is_empty() {
            gpu.queue()
                .write_buffer(graph.buffer(id), 0, bytemuck::cast_slice(values));
        }
    }
    run_and_read(gpu, &graph, out.id, out.len())
}

/// The GPU kernel set with every tile forced, K split each of `splits` ways.
fn forced_tiles(splits: &'static [u32]) -> impl Iterator<Item = Tuning> {
    let gpu_tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    GemmTile::ALL.into_iter().flat_map(move |tile| {
        splits.iter().map(move |&split_k| Tuning {
            conv_tiles: ConvTiles::Fixed { tile, split_k },
            ..gpu_tuning
        })
    })
}

/// Every case of [`CASES`] on `gpu` with each of `tunings` (the kernels rebuilt for each):
/// `check(tuning, case, data, output)`.
fn for_every_case(
    gpu: Gpu,
    tunings: impl IntoIterator<Item = Tuning>,
    mut check: impl FnMut(&Tuning, &Case, &Data, Vec<f32>),
) {
    let mut gpu = Some(gpu);
    for tuning in tunings {
        let device = gpu.take().unwrap().with_tuning(tuning);
        for case in CASES {
            let data = Data::new(case);
            check(&tuning, case, &data, run(&device, case, &data));
        }
        device.wait_idle("conv test").unwrap();
        gpu = Some(device);
    }
}

#[test]
fn every_kernel_matches_an_f64_convolution_over_odd_shapes() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let gpu_tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let mut tunings = vec![
        Tuning::for_device_type(wgpu::DeviceType::Cpu),
        Tuning {
            block_size: BlockSize::Small,
            ..gpu_tuning
        },
        gpu_tuning,
        // Split K with the shape rule: every layer here launches few workgroups.
        Tuning {
            split_k_below_workgroups: 1000,
            ..gpu_tuning
        },
    ];
    tunings.extend(forced_tiles(&[1, 2, 3, 8]));
    for_every_case(gpu, tunings, |tuning, case, data, got| {
        let error = rel_l2(&got, &data.reference(case));
        assert!(
            error < 1e-6,
            "{:?} / {:?}: {case:?}: {error:.2e}",
            tuning.block_size,
            tuning.conv_tiles
        );
    });
}

impl Data {
    /// The data with the convolution's operands (inputs and weight) rounded to f16, as
    /// [`Precision::Mixed`] stages them; bias, temb and residual stay f32.
    fn with_f16_operands(&self) -> Self {
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        };
        Self {
            first: round(&self.first),
            second: round(&self.second),
            weight: round(&self.weight),
            bias: self.bias.clone(),
            temb: self.temb.clone(),
            residual: self.residual.clone(),
        }
    }
}

/// Mixed precision on both kernel sets and every tile, unsplit and split, with the FMA body
/// and, where the adapter has cooperative matrices, with them: exactly the f64 convolution of
/// the f16-rounded operands (f32 accumulation: under 1e-6), and within 2e-3 of the f32
/// operands' convolution (the f16 rounding itself: about 3e-4).
#[test]
fn mixed_precision_is_the_convolution_of_f16_rounded_operands() {
    for cooperative_matrix in [CooperativeMatrix::Off, CooperativeMatrix::Auto] {
        let options = GpuOptions {
            precision: Precision::Mixed,
            cooperative_matrix,
            ..Default::default()
        };
        let gpu = Gpu::new(&options).unwrap();
        let coop = gpu.cooperative_matrix();
        if cooperative_matrix == CooperativeMatrix::Auto && coop.is_none() {
            let required = std::env::var_os(crate::gpu::REQUIRE_COOPERATIVE_MATRIX_ENV);
            assert!(required.is_none(), "no usable cooperative matrices");
            eprintln!("no cooperative matrices on this adapter: their body is not run");
            return;
        }
        let gpu_tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        let cpu_tuning = Tuning::for_device_type(wgpu::DeviceType::Cpu);
        let tunings = [cpu_tuning, gpu_tuning]
            .into_iter()
            .chain(forced_tiles(&[1, 3]));
        for_every_case(gpu, tunings, |tuning, case, data, got| {
            let rounded = rel_l2(&got, &data.with_f16_operands().reference(case));
            let exact = rel_l2(&got, &data.reference(case));
            let what = format!("{coop:?} {:?}: {case:?}", tuning.conv_tiles);
            assert!(rounded < 1e-6, "{what}: vs f16 operands {rounded:.2e}");
            assert!(exact < 2e-3 && exact > 1e-5, "{what}: vs f32 {exact:.2e}");
        });
        eprintln!("mixed precision, cooperative matrices {coop:?}: every case within 1e-6");
    }
}

/// A weight beyond f16's range is a typed error naming the tensor, under mixed precision.
#[test]
fn a_weight_beyond_f16_range_is_an_error_under_mixed_precision() {
    let options = GpuOptions {
        precision: Precision::Mixed,
        ..Default::default()
    };
    let gpu = Gpu::new(&options).unwrap();
    let case = CASES[0];
    let mut data = Data::new(&case);
    data.weight[7] = 1e5;
    let mut source = Given(&data);
    let mut path = WeightPath::new(&gpu, &mut source);
    let c_in = case.c_first + case.c_second;
    let conv = Conv::load(&mut path.pp("conv"), c_in, case.c_out, 3, case.sampling);
    let message = conv.err().expect("an error").to_string();
    assert!(
        message.contains("conv.weight") && message.contains("f16"),
        "{message}"
    );
}
