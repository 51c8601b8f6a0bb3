//! `diffusion-wgpu`: the command-line tool. Argument parsing and output only; everything it
//! does is a library call an app could make too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use diffusion_wgpu::{
    Gpu, GpuOptions, LinearNoiseModel, NoiseSource, PrevTimestep, Sampler, SamplerSettings,
    SchedulerConfig, TimestepSpacing,
};

#[derive(Parser)]
#[command(
    version,
    about = "Diffusion sampling (DDPM, DDIM) on any GPU through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, device type and the limits that matter.
    Info,
    /// Sample with the analytic toy model eps = 0.1 * x (checks the whole pipeline end to end).
    Toy(ToyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerKind {
    Ddim,
    Ddpm,
}

#[derive(Clone, Copy, ValueEnum)]
enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

#[derive(clap::Args)]
struct ToyArgs {
    /// The sampling algorithm.
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerKind,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM noise weight in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    /// Seed of the host RNG that draws x_T and the step noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Image side in pixels (3 channels).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// A diffusers scheduler_config.json (defaults: diffusers' DDIM/DDPM defaults).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Override the config's timestep spacing.
    #[arg(long, value_enum)]
    spacing: Option<Spacing>,
    /// DDIM: step to the next listed timestep instead of diffusers' `t - T // N`.
    #[arg(long)]
    exact_prev_timestep: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> diffusion_wgpu::Result<()> {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    match cli.command {
        Command::Info => {
            print_info(&gpu);
            Ok(())
        }
        Command::Toy(args) => toy(gpu, &args),
    }
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

fn toy(gpu: Arc<Gpu>, args: &ToyArgs) -> diffusion_wgpu::Result<()> {
    let mut config = match &args.scheduler_config {
        Some(path) => SchedulerConfig::from_file(path)?,
        None => SchedulerConfig::default(),
    };
    if let Some(spacing) = args.spacing {
        config.timestep_spacing = match spacing {
            Spacing::Leading => TimestepSpacing::Leading,
            Spacing::Linspace => TimestepSpacing::Linspace,
            Spacing::Trailing => TimestepSpacing::Trailing,
        };
    }
    let settings = match args.sampler {
        SamplerKind::Ddpm => SamplerSettings::ddpm(args.steps),
        SamplerKind::Ddim => SamplerSettings {
            method: diffusion_wgpu::Method::Ddim {
                eta: args.eta,
                use_clipped_model_output: false,
                prev_timestep: if args.exact_prev_timestep {
                    PrevTimestep::NextInList
                } else {
                    PrevTimestep::Diffusers
                },
            },
            ..SamplerSettings::ddim(args.steps, args.eta)
        },
    };
    let sampler = Sampler::new(gpu, config)?;
    let shape = [args.batch, 3, args.size, args.size];
    let start = Instant::now();
    let x0 = sampler.sample(
        &LinearNoiseModel::new(0.1),
        shape,
        &settings,
        NoiseSource::Seed(args.seed),
        &mut |_| {},
    )?;
    let elapsed = start.elapsed();
    let mean = x0.iter().map(|&v| f64::from(v)).sum::<f64>() / x0.len() as f64;
    let std = (x0
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / x0.len() as f64)
        .sqrt();
    println!(
        "{} steps on {:?}: x0 mean {mean:.4}, std {std:.4}, in {:.1} ms ({:.2} ms per step)",
        args.steps,
        shape,
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / args.steps as f64
    );
    Ok(())
}
