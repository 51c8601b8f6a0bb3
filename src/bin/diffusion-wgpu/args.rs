//! The command line: every subcommand's arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use diffusion_wgpu::{
    CooperativeMatrix, DpmAlgorithm, DpmSolverOptions, FinalSigma, Method, Precision, PrevTimestep,
    SamplerSettings, SchedulerConfig, SchedulerFile, TimestepSpacing, UniPcOptions,
};

/// With no subcommand it samples: by default a 4x4 grid from the bundled Fashion-MNIST model
/// with DDIM, 50 steps, eta 0, written to samples.png.
#[derive(Parser)]
#[command(
    version,
    about = "Diffusion sampling (DDPM, DDIM) on any GPU through wgpu",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub sample: SampleArgs,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Text to image with a Stable Diffusion 1.x / 2.x pipeline folder (diffusers'
    /// save_pretrained layout).
    Txt2img(Txt2imgArgs),
}

/// `txt2img`.
#[derive(clap::Args)]
pub struct Txt2imgArgs {
    /// The pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Classifier-free guidance scale (at most 1: no guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance_scale: f32,
    /// Image width in pixels.
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    /// Image height in pixels.
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    /// Text encoder layers to skip from the end.
    #[arg(long, default_value_t = 0)]
    pub clip_skip: usize,
    /// Weights variant to prefer (e.g. fp16 for *.fp16.safetensors).
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub autotune: AutotuneArgs,
    /// Output: a .png image, or a .safetensors file with `image` [1,3,H,W] in [-1, 1].
    #[arg(long, default_value = "txt2img.png")]
    pub out: PathBuf,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SamplerKind {
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
pub enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

/// The sampler and schedule options shared by `sample` and `toy`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// The sampling algorithm (default: the scheduler config's class for the solver classes,
    /// else ddim).
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerKind>,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM noise weight in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub eta: f32,
    /// Seed of the host RNG that draws x_T and the step noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A diffusers scheduler_config.json (default: the model folder's, else diffusers' defaults).
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Override the config's timestep spacing.
    #[arg(long, value_enum)]
    pub spacing: Option<Spacing>,
    /// DDIM: step to the next listed timestep instead of diffusers' `t - T // N`.
    #[arg(long)]
    pub exact_prev_timestep: bool,
}

/// Which model to run: `--model DIR`, `--arch NAME`, or (neither) the bundled one.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors) or a
    /// pipeline folder with unet/ and scheduler/ (default: the bundled Fashion-MNIST model).
    #[arg(long, conflicts_with = "arch")]
    pub model: Option<PathBuf>,
    /// A built-in architecture with random weights: ddpm-cifar10-32, or sd15-unet (bench only:
    /// Stable Diffusion 1.5's conditional U-Net).
    #[arg(long)]
    pub arch: Option<String>,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Number of images (ignored with --init).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Image side in pixels (default: the model's sample_size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Class label for class-conditional models: one for all images, or one per image
    /// separated by commas.
    #[arg(long, value_delimiter = ',')]
    pub class: Vec<u32>,
    /// A safetensors file with `x_T` [B,C,H,W], the starting noise.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Image-to-image: start from this image (a PNG, or a safetensors file with `x0`
    /// [B,C,H,W] in [-1, 1]) noised to the level `--strength` sets.
    #[arg(long, conflicts_with = "init")]
    pub init_image: Option<PathBuf>,
    /// Image-to-image: the share of the steps run, in (0, 1].
    #[arg(long, default_value_t = 0.8)]
    pub strength: f64,
    /// Inpaint --init-image with RePaint where this mask is black (a PNG, white keeps the
    /// image; or a safetensors file with `mask` [B,1|C,H,W], 1 keeping it). Uses --steps and
    /// --eta; --sampler does not apply.
    #[arg(long, requires = "init_image")]
    pub mask: Option<PathBuf>,
    /// RePaint: steps taken back up the chain per jump.
    #[arg(long, default_value_t = 10)]
    pub jump_length: usize,
    /// RePaint: how many times each jump is made.
    #[arg(long, default_value_t = 10)]
    pub jump_n_sample: usize,
    /// A safetensors file with `noise` [steps,B,C,H,W], the noise each step adds, in order.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    #[command(flatten)]
    pub autotune: AutotuneArgs,
    /// Output: a .png image grid, or a .safetensors file with `x0` [B,C,H,W].
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

#[derive(clap::Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A safetensors file with `sample` (f32 [B,C,H,W]) and `timesteps` (int [B]), and
    /// `class_labels` (int [B]) for class-conditional models.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `eps` (f32 [B,C,H,W]), the model's raw output.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

#[derive(clap::Args)]
pub struct ToyArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Image side in pixels (3 channels).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes, separated by commas.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub batch: Vec<usize>,
    /// DDIM steps of the timed sampling run (0: no run).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Timed forward passes and profile repeats per batch size.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Skip the per-kernel profile and the GEMM ceiling.
    #[arg(long)]
    pub no_profile: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also time diffusers' UNet2DModel on PyTorch with benches/peer/unet_peer.py (run with
    /// this Python, which needs torch and diffusers) and print the ratio.
    #[arg(long, value_name = "PYTHON")]
    pub peer: Option<PathBuf>,
    /// The peer's torch device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub peer_device: String,
    /// Image side in pixels (default: the model's sample_size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Instead of the report: this many DDIM runs (--steps, first --batch) back to back,
    /// printing resident memory and live GPU objects as they go.
    #[arg(long, value_name = "RUNS")]
    pub soak: Option<usize>,
    /// Override the adapter's block size of the register-blocked kernels (CPU adapters use
    /// large blocks, GPUs tiled convolutions).
    #[arg(long, value_enum)]
    pub block_size: Option<BlockChoice>,
    /// Group norms before a tiled convolution write only each channel's map, applied in the
    /// convolution's gather (Tuning::norm_in_conv), instead of the normalised tensor.
    #[arg(long)]
    pub norm_in_conv: bool,
    #[command(flatten)]
    pub autotune: AutotuneArgs,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

/// `--autotune`, shared by `sample`, `bench` and `txt2img`.
#[derive(clap::Args)]
pub struct AutotuneArgs {
    /// Measure the tiled convolutions' tiles and split-K factors per layer shape on this
    /// adapter (GPU kernel set only), cached in the platform's cache directory: off (the shape
    /// rule), quick (a few seconds at most), full (every candidate).
    #[arg(long = "autotune", value_enum, default_value = "quick")]
    pub mode: AutotuneChoice,
}

/// `--autotune`.
#[derive(Clone, Copy, ValueEnum)]
pub enum AutotuneChoice {
    /// The shape rule, nothing measured.
    Off,
    /// The likely candidates, within a few seconds.
    Quick,
    /// Every candidate of every layer shape.
    Full,
}

impl AutotuneChoice {
    /// The library's mode.
    pub fn mode(self) -> diffusion_wgpu::Autotune {
        match self {
            Self::Off => diffusion_wgpu::Autotune::Off,
            Self::Quick => diffusion_wgpu::Autotune::Quick,
            Self::Full => diffusion_wgpu::Autotune::Full,
        }
    }
}

/// `--precision` (sample, forward, bench, txt2img).
#[derive(clap::Args)]
pub struct PrecisionArgs {
    /// The convolutions' precision: f32 (matches diffusers), or mixed (f16 weights and
    /// workgroup tiles, f32 accumulation and activations; needs SHADER_F16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionChoice,
    /// Under mixed precision, whether the convolutions run on the adapter's cooperative
    /// matrices (tensor cores) where it has them: auto, or off (the f16 FMA kernel).
    #[arg(long, value_enum, default_value = "auto")]
    pub cooperative_matrix: CoopChoice,
}

/// The values of `--cooperative-matrix`.
#[derive(Clone, Copy, ValueEnum)]
pub enum CoopChoice {
    /// Where the adapter has a usable configuration.
    Auto,
    /// Never.
    Off,
}

/// The values of `--precision`.
#[derive(Clone, Copy, ValueEnum)]
pub enum PrecisionChoice {
    /// f32 everywhere.
    F32,
    /// f16 convolution operands, f32 accumulation (diffusion_wgpu::Precision::Mixed).
    Mixed,
}

impl PrecisionChoice {
    /// The library's precision.
    pub fn precision(self) -> Precision {
        match self {
            PrecisionChoice::F32 => Precision::F32,
            PrecisionChoice::Mixed => Precision::Mixed,
        }
    }
}

impl Cli {
    /// The `--autotune` of the command that runs (off for `info`, `forward` and `toy`).
    pub fn autotune(&self) -> diffusion_wgpu::Autotune {
        let choice = match &self.command {
            None => Some(&self.sample.autotune),
            Some(Command::Sample(args)) => Some(&args.autotune),
            Some(Command::Bench(args)) => Some(&args.autotune),
            Some(Command::Txt2img(args)) => Some(&args.autotune),
            Some(Command::Info | Command::Forward(_) | Command::Toy(_)) => None,
        };
        choice.map_or(diffusion_wgpu::Autotune::Off, |args| args.mode.mode())
    }

    /// The `--precision` of the command that runs (f32 for `info` and `toy`).
    pub fn precision(&self) -> Precision {
        self.precision_args()
            .map_or(Precision::F32, |args| args.precision.precision())
    }

    /// The `--cooperative-matrix` of the command that runs (auto where it has none).
    pub fn cooperative_matrix(&self) -> CooperativeMatrix {
        match self.precision_args().map(|args| args.cooperative_matrix) {
            Some(CoopChoice::Off) => CooperativeMatrix::Off,
            Some(CoopChoice::Auto) | None => CooperativeMatrix::Auto,
        }
    }

    /// The precision options of the command that runs, if it has them.
    fn precision_args(&self) -> Option<&PrecisionArgs> {
        match &self.command {
            None => Some(&self.sample.precision),
            Some(Command::Sample(args)) => Some(&args.precision),
            Some(Command::Forward(args)) => Some(&args.precision),
            Some(Command::Bench(args)) => Some(&args.precision),
            Some(Command::Txt2img(args)) => Some(&args.precision),
            Some(Command::Info | Command::Toy(_)) => None,
        }
    }
}

/// `bench --block-size`.
#[derive(Clone, Copy, ValueEnum)]
pub enum BlockChoice {
    /// Many outputs per invocation (the convolution: 32 channels x 16 pixels).
    Large,
    /// Few outputs per invocation (the convolution: 4 channels x 4 pixels).
    Small,
    /// Tiled implicit-GEMM convolutions (the GPU default).
    Tiled,
}

impl SamplingArgs {
    /// The schedule and the algorithm of the config file's class (`_class_name`):
    /// `--scheduler-config`, else `model_default`, else diffusers' defaults (DDPM).
    pub fn scheduler_config(
        &self,
        model_default: Option<(SchedulerConfig, Method)>,
    ) -> diffusion_wgpu::Result<(SchedulerConfig, Method)> {
        let (config, method) = match (self.scheduler_config.as_deref(), model_default) {
            (Some(path), _) => {
                let file = SchedulerFile::from_file(path)?;
                (file.config, file.method)
            }
            (None, Some(default)) => default,
            (None, None) => (SchedulerConfig::default(), Method::Ddpm),
        };
        Ok((self.with_overrides(config), method))
    }

    /// `config` with the command line's overrides (`--spacing`) applied.
    pub fn with_overrides(&self, mut config: SchedulerConfig) -> SchedulerConfig {
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
    pub fn settings(&self, class_method: &Method) -> SamplerSettings {
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
