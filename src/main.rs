//! `diffusion-wgpu`: the command-line tool. Argument parsing and output only; everything it
//! does is a library call an app could make too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use diffusion_wgpu::bench::BenchSettings;
use diffusion_wgpu::bench::peer::{self, PeerModel};
use diffusion_wgpu::bench::soak::soak;
use diffusion_wgpu::io::{read_png, read_tensors, take_tensor, write_png_grid, write_tensors};
use diffusion_wgpu::model::unet::{
    BUNDLED_MODEL, ModelFiles, architecture_config, bundled_scheduler_config, write_bundled_model,
};
use diffusion_wgpu::{
    ConvKernel, DpmAlgorithm, DpmSolverOptions, Error, FinalSigma, Gpu, GpuOptions,
    LinearNoiseModel, Method, NoiseModel, NoiseSource, PrevTimestep, RePaintOptions, Sampler,
    SamplerSettings, SchedulerConfig, SchedulerFile, StepProgress, TimestepSpacing, Tuning, Unet,
    UniPcOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

/// With no subcommand it samples: by default a 4x4 grid from the bundled Fashion-MNIST model
/// with DDIM, 50 steps, eta 0, written to samples.png.
#[derive(Parser)]
#[command(
    version,
    about = "Diffusion sampling (DDPM, DDIM) on any GPU through wgpu",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, device type and the limits that matter.
    Info,
    /// Sample images (the default): the bundled model, or a diffusers UNet2DModel checkpoint.
    Sample(SampleArgs),
    /// One U-Net forward pass: IN holds `sample` [B,C,H,W] and `timesteps` [B]; OUT gets `eps`.
    Forward(ForwardArgs),
    /// Sample with the analytic toy model eps = 0.1 * x (checks the whole pipeline end to end).
    Toy(ToyArgs),
    /// Measure a U-Net: ms per forward and per step, images/s of a DDIM run, the sampler's
    /// share, GFLOP/s and GPU time per kernel family.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerKind {
    Ddim,
    Ddpm,
    /// DPM-Solver++ 2M.
    #[value(name = "dpmpp-2m")]
    DpmPp2m,
    /// DPM-Solver++ 3M.
    #[value(name = "dpmpp-3m")]
    DpmPp3m,
    /// SDE DPM-Solver++ 2M.
    #[value(name = "dpmpp-2m-sde")]
    DpmPp2mSde,
    Unipc,
    Euler,
    #[value(name = "euler-a")]
    EulerA,
}

#[derive(Clone, Copy, ValueEnum)]
enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

/// The sampler and schedule options shared by `sample` and `toy`.
#[derive(clap::Args)]
struct SamplingArgs {
    /// The sampling algorithm (default: the scheduler config's class for the solver classes,
    /// else ddim).
    #[arg(long, value_enum)]
    sampler: Option<SamplerKind>,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM noise weight in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    /// Seed of the host RNG that draws x_T and the step noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A diffusers scheduler_config.json (default: the model folder's, else diffusers' defaults).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Override the config's timestep spacing.
    #[arg(long, value_enum)]
    spacing: Option<Spacing>,
    /// DDIM: step to the next listed timestep instead of diffusers' `t - T // N`.
    #[arg(long)]
    exact_prev_timestep: bool,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// A diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors) or a
    /// pipeline folder with unet/ and scheduler/ (default: the bundled Fashion-MNIST model).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Number of images (ignored with --init).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Image side in pixels (default: the model's sample_size).
    #[arg(long)]
    size: Option<usize>,
    /// Class label for class-conditional models: one for all images, or one per image
    /// separated by commas.
    #[arg(long, value_delimiter = ',')]
    class: Vec<u32>,
    /// A safetensors file with `x_T` [B,C,H,W], the starting noise.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Image-to-image: start from this image (a PNG, or a safetensors file with `x0`
    /// [B,C,H,W] in [-1, 1]) noised to the level `--strength` sets.
    #[arg(long, conflicts_with = "init")]
    init_image: Option<PathBuf>,
    /// Image-to-image: the share of the steps run, in (0, 1].
    #[arg(long, default_value_t = 0.8)]
    strength: f64,
    /// Inpaint --init-image with RePaint where this mask is black (a PNG, white keeps the
    /// image; or a safetensors file with `mask` [B,1|C,H,W], 1 keeping it). Uses --steps and
    /// --eta; --sampler does not apply.
    #[arg(long, requires = "init_image")]
    mask: Option<PathBuf>,
    /// RePaint: steps taken back up the chain per jump.
    #[arg(long, default_value_t = 10)]
    jump_length: usize,
    /// RePaint: how many times each jump is made.
    #[arg(long, default_value_t = 10)]
    jump_n_sample: usize,
    /// A safetensors file with `noise` [steps,B,C,H,W], the noise each step adds, in order.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Output: a .png image grid, or a .safetensors file with `x0` [B,C,H,W].
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ForwardArgs {
    /// A diffusers UNet2DModel folder.
    #[arg(long)]
    model: PathBuf,
    /// A safetensors file with `sample` (f32 [B,C,H,W]) and `timesteps` (int [B]), and
    /// `class_labels` (int [B]) for class-conditional models.
    #[arg(long)]
    input: PathBuf,
    /// Where to write `eps` (f32 [B,C,H,W]), the model's raw output.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ToyArgs {
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Image side in pixels (3 channels).
    #[arg(long, default_value_t = 32)]
    size: usize,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A diffusers UNet2DModel folder (default: the bundled model).
    #[arg(long, conflicts_with = "arch")]
    model: Option<PathBuf>,
    /// A built-in architecture with random weights: ddpm-cifar10-32.
    #[arg(long)]
    arch: Option<String>,
    /// Batch sizes, separated by commas.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// DDIM steps of the timed sampling run (0: no run).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Timed forward passes and profile repeats per batch size.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Skip the per-kernel profile and the GEMM ceiling.
    #[arg(long)]
    no_profile: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also time diffusers' UNet2DModel on PyTorch with benches/peer/unet_peer.py (run with
    /// this Python, which needs torch and diffusers) and print the ratio.
    #[arg(long, value_name = "PYTHON")]
    peer: Option<PathBuf>,
    /// The peer's torch device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    peer_device: String,
    /// Image side in pixels (default: the model's sample_size).
    #[arg(long)]
    size: Option<usize>,
    /// Instead of the report: this many DDIM runs (--steps, first --batch) back to back,
    /// printing resident memory and live GPU objects as they go.
    #[arg(long, value_name = "RUNS")]
    soak: Option<usize>,
    /// Override the adapter's convolution kernel (CPU adapters use blocks, GPUs small).
    #[arg(long, value_enum)]
    conv_kernel: Option<ConvChoice>,
}

/// `bench --conv-kernel`.
#[derive(Clone, Copy, ValueEnum)]
enum ConvChoice {
    /// Register blocks of 32 channels x 16 pixels.
    Blocks,
    /// 4 channels x 4 pixels per invocation.
    Small,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the names and messages read from files hold.
            let message: String = e
                .to_string()
                .chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect();
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> diffusion_wgpu::Result<()> {
    let mut gpu = Gpu::new(&GpuOptions::default())?;
    if let Some(Command::Bench(BenchArgs {
        conv_kernel: Some(kernel),
        ..
    })) = &cli.command
    {
        let conv = match kernel {
            ConvChoice::Blocks => ConvKernel::RegisterBlocks,
            ConvChoice::Small => ConvKernel::SmallBlocks,
        };
        let tuning = Tuning {
            conv,
            ..gpu.tuning()
        };
        gpu = gpu.with_tuning(tuning);
    }
    let gpu = Arc::new(gpu);
    match cli.command {
        Some(Command::Info) => {
            print_info(&gpu);
            Ok(())
        }
        Some(Command::Sample(args)) => sample(gpu, &args),
        Some(Command::Forward(args)) => forward(gpu, &args),
        Some(Command::Toy(args)) => toy(gpu, &args),
        Some(Command::Bench(args)) => bench(gpu, &args),
        None => sample(gpu, &cli.sample),
    }
}

fn adapter_name(gpu: &Gpu) -> String {
    gpu.adapter_info().map_or_else(
        || "(app-provided device)".to_string(),
        |info| format!("{} ({:?})", info.name, info.backend),
    )
}

fn print_info(gpu: &Gpu) {
    if let Some(info) = gpu.adapter_info() {
        println!("adapter:      {}", info.name);
        println!("backend:      {:?}", info.backend);
        println!("device type:  {:?}", info.device_type);
        println!("driver:       {} {}", info.driver, info.driver_info);
    }
    let limits = gpu.limits();
    println!(
        "max buffer size:                 {}",
        limits.max_buffer_size
    );
    println!(
        "max storage buffer binding size: {}",
        limits.max_storage_buffer_binding_size
    );
    println!(
        "max workgroup storage size:      {}",
        limits.max_compute_workgroup_storage_size
    );
    println!(
        "max workgroups per dimension:    {}",
        limits.max_compute_workgroups_per_dimension
    );
    println!(
        "max invocations per workgroup:   {}",
        limits.max_compute_invocations_per_workgroup
    );
    println!("features:     {:?}", gpu.device().features());
}

impl SamplingArgs {
    /// The schedule and the algorithm of the config file's class (`_class_name`).
    fn scheduler_config(
        &self,
        model_default: Option<&Path>,
    ) -> diffusion_wgpu::Result<(SchedulerConfig, Method)> {
        let (config, method) = match self.scheduler_config.as_deref().or(model_default) {
            Some(path) => {
                let file = SchedulerFile::from_file(path)?;
                (file.config, file.method)
            }
            None => (SchedulerConfig::default(), Method::Ddpm),
        };
        Ok((self.with_overrides(config), method))
    }

    /// `config` with the command line's overrides (`--spacing`) applied.
    fn with_overrides(&self, mut config: SchedulerConfig) -> SchedulerConfig {
        if let Some(spacing) = self.spacing {
            config.timestep_spacing = match spacing {
                Spacing::Leading => TimestepSpacing::Leading,
                Spacing::Linspace => TimestepSpacing::Linspace,
                Spacing::Trailing => TimestepSpacing::Trailing,
            };
        }
        config
    }

    /// The run: `--sampler`'s algorithm (diffusers' defaults for its class), else the config
    /// class's (`class_method`) for a solver class, else DDIM.
    fn settings(&self, class_method: &Method) -> SamplerSettings {
        let dpm = |solver_order, algorithm_type| {
            Method::DpmSolver(DpmSolverOptions {
                solver_order,
                algorithm_type,
                ..Default::default()
            })
        };
        let ddim = Method::Ddim {
            eta: self.eta,
            use_clipped_model_output: false,
            prev_timestep: if self.exact_prev_timestep {
                PrevTimestep::NextInList
            } else {
                PrevTimestep::Diffusers
            },
        };
        let method = match self.sampler {
            None => match class_method {
                Method::Ddpm | Method::Ddim { .. } => ddim,
                solver => solver.clone(),
            },
            Some(SamplerKind::Ddim) => ddim,
            Some(SamplerKind::Ddpm) => Method::Ddpm,
            Some(SamplerKind::DpmPp2m) => dpm(2, DpmAlgorithm::DpmSolverPlusPlus),
            Some(SamplerKind::DpmPp3m) => dpm(3, DpmAlgorithm::DpmSolverPlusPlus),
            Some(SamplerKind::DpmPp2mSde) => dpm(2, DpmAlgorithm::SdeDpmSolverPlusPlus),
            Some(SamplerKind::Unipc) => Method::UniPc(UniPcOptions::default()),
            Some(SamplerKind::Euler) => Method::Euler {
                use_karras_sigmas: false,
                final_sigmas_type: FinalSigma::Zero,
            },
            Some(SamplerKind::EulerA) => Method::EulerAncestral,
        };
        SamplerSettings {
            method,
            num_inference_steps: self.steps,
            custom_timesteps: None,
        }
    }
}

/// Runs the sampler with a progress bar on stderr; returns x0 and the seconds it took.
/// `image`: an image-to-image start (the image and the strength).
fn run_sampler(
    sampler: &Sampler,
    model: &dyn NoiseModel,
    shape: [usize; 4],
    settings: &SamplerSettings,
    noise: NoiseSource<'_>,
    image: Option<(&[f32], f64)>,
) -> diffusion_wgpu::Result<(Vec<f32>, f64)> {
    let bar = ProgressBar::new(settings.num_inference_steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t = {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut progress = |p: StepProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64 + 1);
        bar.set_message(p.timestep.to_string());
    };
    let result = match image {
        Some((image, strength)) => sampler.sample_from_image(
            model,
            shape,
            settings,
            image,
            strength,
            noise,
            &mut progress,
        ),
        None => sampler.sample(model, shape, settings, noise, &mut progress),
    };
    bar.finish_and_clear();
    Ok((result?, start.elapsed().as_secs_f64()))
}

fn sample(gpu: Arc<Gpu>, args: &SampleArgs) -> diffusion_wgpu::Result<()> {
    let (unet, config) = match &args.model {
        Some(dir) => {
            let files = ModelFiles::locate(dir)?;
            let unet = Unet::load(gpu.clone(), dir)?;
            let config = args
                .sampling
                .scheduler_config(files.scheduler_config.as_deref())?;
            (unet, config)
        }
        None => {
            let config = match &args.sampling.scheduler_config {
                Some(_) => args.sampling.scheduler_config(None)?,
                None => (
                    args.sampling.with_overrides(bundled_scheduler_config()?),
                    Method::Ddpm,
                ),
            };
            (Unet::bundled(gpu.clone())?, config)
        }
    };
    let (config, class_method) = config;
    let settings = args.sampling.settings(&class_method);
    let sampler = Sampler::new(gpu.clone(), config)?;

    let init = match &args.init {
        Some(path) => {
            let mut tensors = read_tensors(path)?;
            let c = Some(unet.config().in_channels);
            Some(take_tensor(
                &mut tensors,
                path,
                "x_T",
                &[None, c, None, None],
            )?)
        }
        None => None,
    };
    let image = match &args.init_image {
        Some(path) => {
            let size = args.size.or(unet.config().sample_size);
            let expected = [None, Some(unet.config().in_channels), size, size];
            let is_png = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let mut tensors = if is_png {
                std::iter::once(("x0".to_string(), read_png(path)?)).collect()
            } else {
                read_tensors(path)?
            };
            Some(take_tensor(&mut tensors, path, "x0", &expected)?)
        }
        None => None,
    };
    let shape = match (&init, &image) {
        (Some(x), _) | (None, Some(x)) => [x.shape[0], x.shape[1], x.shape[2], x.shape[3]],
        (None, None) => {
            let size =
                args.size
                    .or(unet.config().sample_size)
                    .ok_or_else(|| Error::InvalidSetting {
                        setting: "size",
                        message: "the model's config has no sample_size: pass --size".into(),
                    })?;
            [args.batch, unet.config().in_channels, size, size]
        }
    };
    let noise = match &args.noise {
        Some(path) => {
            let mut tensors = read_tensors(path)?;
            let expected = [
                Some(settings.num_inference_steps),
                Some(shape[0]),
                Some(shape[1]),
                Some(shape[2]),
                Some(shape[3]),
            ];
            Some(take_tensor(&mut tensors, path, "noise", &expected)?)
        }
        None => None,
    };
    let source = match (&init, &noise) {
        (Some(x_t), Some(noise)) => NoiseSource::Explicit {
            initial: &x_t.data,
            per_step: &noise.data,
        },
        (Some(x_t), None) => NoiseSource::InitialWithSeed {
            initial: &x_t.data,
            seed: args.sampling.seed,
        },
        (None, Some(_)) => {
            return Err(Error::InvalidSetting {
                setting: "noise",
                message: "--noise needs --init (the x_T it continues from)".into(),
            });
        }
        (None, None) => NoiseSource::Seed(args.sampling.seed),
    };
    let labels: Vec<u32> = match args.class.as_slice() {
        [] => Vec::new(),
        [one] => vec![*one; shape[0]],
        many => many.to_vec(),
    };

    println!("adapter: {}", adapter_name(&gpu));
    let start = Instant::now();
    unet.prepare(shape[0], shape[2], shape[3])?;
    println!(
        "prepared the model in {:.1} s (graph, pipelines, one warm-up pass)",
        start.elapsed().as_secs_f64()
    );
    let mask = match &args.mask {
        Some(path)
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png")) =>
        {
            // White (>= 0.5 after scaling to [0, 1], as diffusers binarizes) keeps the image.
            let mut mask = read_png(path)?;
            mask.data
                .iter_mut()
                .for_each(|v| *v = if *v >= 0.0 { 1.0 } else { 0.0 });
            Some(mask.data)
        }
        Some(path) => {
            let mut tensors = read_tensors(path)?;
            let c = [None, Some(shape[2]), Some(shape[3])];
            Some(
                take_tensor(
                    &mut tensors,
                    path,
                    "mask",
                    &[Some(shape[0]), c[0], c[1], c[2]],
                )?
                .data,
            )
        }
        None => None,
    };
    let image = image.as_ref().map(|x| (x.data.as_slice(), args.strength));
    let (x0, seconds) = if let (Some(mask), Some((image, _))) = (&mask, image) {
        let start = Instant::now();
        let options = RePaintOptions {
            eta: args.sampling.eta,
            jump_length: args.jump_length,
            jump_n_sample: args.jump_n_sample,
        };
        let steps = args.sampling.steps;
        let x0 = sampler.inpaint(
            &unet,
            shape,
            steps,
            &options,
            image,
            mask,
            source,
            &mut |_| {},
        )?;
        (x0, start.elapsed().as_secs_f64())
    } else if labels.is_empty() {
        run_sampler(&sampler, &unet, shape, &settings, source, image)?
    } else {
        let model = unet.with_class_labels(&labels);
        run_sampler(&sampler, &model, shape, &settings, source, image)?
    };
    write_output(&args.out, &x0, shape)?;
    println!(
        "wrote {} ({} images, {} steps); sampling took {seconds:.1} s",
        args.out.display(),
        shape[0],
        settings.num_inference_steps
    );
    Ok(())
}

fn write_output(path: &Path, x0: &[f32], shape: [usize; 4]) -> diffusion_wgpu::Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        write_png_grid(path, x0, shape)
    } else {
        write_tensors(path, &[("x0", &shape, x0)])
    }
}

fn forward(gpu: Arc<Gpu>, args: &ForwardArgs) -> diffusion_wgpu::Result<()> {
    let unet = Unet::load(gpu, &args.model)?;
    let mut tensors = read_tensors(&args.input)?;
    let c = Some(unet.config().in_channels);
    let sample = take_tensor(&mut tensors, &args.input, "sample", &[None, c, None, None])?;
    let batch = Some(sample.shape[0]);
    let as_labels = |tensor: diffusion_wgpu::io::HostTensor, name: &str| {
        tensor
            .data
            .iter()
            .map(|&v| {
                (v >= 0.0 && v.fract() == 0.0 && v < 16_777_216.0)
                    .then_some(v as u32)
                    .ok_or_else(|| Error::Checkpoint {
                        file: args.input.display().to_string(),
                        tensor: name.to_string(),
                        message: format!("{v} is not a non-negative integer"),
                    })
            })
            .collect::<diffusion_wgpu::Result<Vec<u32>>>()
    };
    let timesteps = as_labels(
        take_tensor(&mut tensors, &args.input, "timesteps", &[batch])?,
        "timesteps",
    )?;
    let labels = match tensors.contains_key("class_labels") {
        true => Some(as_labels(
            take_tensor(&mut tensors, &args.input, "class_labels", &[batch])?,
            "class_labels",
        )?),
        false => None,
    };
    let shape = [
        sample.shape[0],
        sample.shape[1],
        sample.shape[2],
        sample.shape[3],
    ];
    let eps = unet.forward(&sample.data, shape, &timesteps, labels.as_deref())?;
    let out_shape = [shape[0], unet.config().out_channels, shape[2], shape[3]];
    write_tensors(&args.out, &[("eps", &out_shape, &eps)])?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn toy(gpu: Arc<Gpu>, args: &ToyArgs) -> diffusion_wgpu::Result<()> {
    let (config, class_method) = args.sampling.scheduler_config(None)?;
    let sampler = Sampler::new(gpu.clone(), config)?;
    let settings = args.sampling.settings(&class_method);
    let shape = [args.batch, 3, args.size, args.size];
    println!("adapter: {}", adapter_name(&gpu));
    let (x0, seconds) = run_sampler(
        &sampler,
        &LinearNoiseModel::new(0.1),
        shape,
        &settings,
        NoiseSource::Seed(args.sampling.seed),
        None,
    )?;
    let mean = x0.iter().map(|&v| f64::from(v)).sum::<f64>() / x0.len() as f64;
    let std = (x0
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / x0.len() as f64)
        .sqrt();
    println!(
        "{} steps on {shape:?}: x0 mean {mean:.4}, std {std:.4}, in {:.1} ms ({:.2} ms per step)",
        settings.num_inference_steps,
        seconds * 1e3,
        seconds * 1e3 / settings.num_inference_steps as f64
    );
    Ok(())
}

fn bench(gpu: Arc<Gpu>, args: &BenchArgs) -> diffusion_wgpu::Result<()> {
    let (unet, name, scheduler) = match (&args.model, &args.arch) {
        (Some(dir), _) => {
            let files = ModelFiles::locate(dir)?;
            let scheduler = match files.scheduler_config.as_deref() {
                Some(path) => SchedulerConfig::from_file(path)?,
                None => SchedulerConfig::default(),
            };
            (
                Unet::load(gpu.clone(), dir)?,
                dir.display().to_string(),
                scheduler,
            )
        }
        (None, Some(arch)) => (
            Unet::architecture(gpu.clone(), arch, 0)?,
            format!("{arch} (random weights)"),
            SchedulerConfig::default(),
        ),
        (None, None) => (
            Unet::bundled(gpu.clone())?,
            BUNDLED_MODEL.to_string(),
            bundled_scheduler_config()?,
        ),
    };
    let size = args
        .size
        .or(unet.config().sample_size)
        .ok_or(Error::InvalidSetting {
            setting: "--size",
            message: "the model's config has no sample_size: give --size".into(),
        })?;
    let sampler = Sampler::new(gpu, scheduler)?;
    if let Some(runs) = args.soak {
        let batch = args.batch.first().copied().unwrap_or(1);
        let shape = [batch, unet.config().in_channels, size, size];
        let settings = SamplerSettings::ddim(args.steps.max(1), 0.0);
        let bar = ProgressBar::new(runs as u64);
        let report = soak(&unet, &sampler, shape, &settings, runs, &mut |done| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        if args.json {
            println!("{:#}", report.to_json());
        } else {
            print!("{}", report.to_text());
        }
        return Ok(());
    }
    let settings = BenchSettings {
        batches: args.batch.clone(),
        run_steps: args.steps,
        repeats: args.repeats,
        profile: !args.no_profile,
    };
    let report = diffusion_wgpu::bench::run(&unet, &name, &sampler, size, &settings)?;
    let peer = match &args.peer {
        Some(python) => {
            let model = peer_model(args)?;
            let peer = peer::run(
                python,
                &model,
                &args.batch,
                args.repeats,
                args.steps,
                &args.peer_device,
            );
            if let PeerModel::Folder(dir) | PeerModel::ConfigOnly(dir) = &model
                && args.model.is_none()
            {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some(peer?)
        }
        None => None,
    };
    if args.json {
        let mut json = report.to_json();
        if let Some(peer) = &peer {
            json["peer"] = peer.json.clone();
            json["peer_ratios"] = peer.ratios_json(&report);
        }
        println!("{json:#}");
    } else {
        print!("{}", report.to_text());
        if let Some(peer) = &peer {
            print!("{}", peer.text(&report));
        }
    }
    Ok(())
}

/// The model folder the PyTorch peer loads: the checkpoint folder, or the bundled model or the
/// architecture's config written to a temporary folder.
fn peer_model(args: &BenchArgs) -> diffusion_wgpu::Result<PeerModel> {
    if let Some(dir) = &args.model {
        return Ok(PeerModel::Folder(dir.clone()));
    }
    let dir = std::env::temp_dir().join(format!("diffusion-wgpu-bench-{}", std::process::id()));
    match &args.arch {
        Some(arch) => {
            let json = architecture_config(arch).ok_or_else(|| Error::InvalidSetting {
                setting: "--arch",
                message: format!("unknown architecture `{arch}`"),
            })?;
            let path = dir.join("config.json");
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, json))
                .map_err(|source| Error::Io { path, source })?;
            Ok(PeerModel::ConfigOnly(dir))
        }
        None => {
            write_bundled_model(&dir)?;
            Ok(PeerModel::Folder(dir))
        }
    }
}
