//! `diffusion-wgpu`: the command-line tool. Argument parsing and output only; everything it
//! does is a library call an app could make too.

mod args;
mod bench;
mod sample;
mod txt2img;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use args::{BenchArgs, BlockChoice, Cli, Command, ModelArgs};
use clap::Parser;
use diffusion_wgpu::model::unet::{BUNDLED_MODEL, ModelFiles, bundled_scheduler_config};
use diffusion_wgpu::{
    BlockSize, Gpu, GpuOptions, Method, SchedulerConfig, SchedulerFile, Tuning, Unet,
};

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
    // Compiled pipelines (Vulkan) and autotuned convolution plans are kept in the platform's
    // cache directory, so a second run prepares the model faster.
    let cache_dir = diffusion_wgpu::gpu::default_pipeline_cache_dir();
    let mut gpu = Gpu::new(&GpuOptions {
        pipeline_cache_dir: cache_dir.clone(),
        autotune: cli.autotune(),
        autotune_cache_dir: cache_dir,
        precision: cli.precision(),
        cooperative_matrix: cli.cooperative_matrix(),
        ..Default::default()
    })?;
    if let Some(Command::Bench(BenchArgs {
        block_size,
        norm_in_conv,
        ..
    })) = &cli.command
    {
        let block_size = match block_size {
            Some(BlockChoice::Large) => BlockSize::Large,
            Some(BlockChoice::Small) => BlockSize::Small,
            Some(BlockChoice::Tiled) => BlockSize::Tiled,
            None => gpu.tuning().block_size,
        };
        let tuning = Tuning {
            block_size,
            norm_in_conv: *norm_in_conv,
            ..gpu.tuning()
        };
        if tuning != gpu.tuning() {
            gpu = gpu.with_tuning(tuning);
        }
    }
    let gpu = Arc::new(gpu);
    match cli.command {
        Some(Command::Info) => {
            print_info(&gpu);
            Ok(())
        }
        Some(Command::Sample(args)) => sample::sample(gpu, &args),
        Some(Command::Forward(args)) => sample::forward(gpu, &args),
        Some(Command::Toy(args)) => sample::toy(gpu, &args),
        Some(Command::Bench(args)) => bench::bench(gpu, &args),
        Some(Command::Txt2img(args)) => txt2img::txt2img(gpu, &args),
        None => sample::sample(gpu, &cli.sample),
    }
}

/// The adapter's name and backend, for reports.
fn adapter_name(gpu: &Gpu) -> String {
    gpu.adapter_info().map_or_else(
        || "(app-provided device)".to_string(),
        |info| format!("{} ({:?})", info.name, info.backend),
    )
}

/// `info`: the adapter, backend and the limits that matter.
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
    match gpu.cooperative_matrix_available() {
        Some(config) => println!(
            "cooperative matrices: {} (used by --precision mixed)",
            config.describe()
        ),
        None => println!("cooperative matrices: none usable"),
    }
}

/// The model a command runs, resolved once from `--model` / `--arch`.
enum ModelSource {
    /// A diffusers checkpoint or pipeline folder.
    Folder(PathBuf),
    /// The bundled Fashion-MNIST model.
    Bundled,
    /// A built-in architecture with random weights.
    Arch(String),
}

impl ModelSource {
    fn from_args(args: &ModelArgs) -> Self {
        match (&args.model, &args.arch) {
            (Some(dir), _) => Self::Folder(dir.clone()),
            (None, Some(arch)) => Self::Arch(arch.clone()),
            (None, None) => Self::Bundled,
        }
    }

    /// The name reports give the model.
    fn name(&self) -> String {
        match self {
            Self::Folder(dir) => dir.display().to_string(),
            Self::Bundled => BUNDLED_MODEL.to_string(),
            Self::Arch(arch) => format!("{arch} (random weights)"),
        }
    }

    /// Loads the U-Net onto `gpu`.
    fn load(&self, gpu: &Arc<Gpu>) -> diffusion_wgpu::Result<Unet> {
        match self {
            Self::Folder(dir) => Unet::load(gpu.clone(), dir),
            Self::Bundled => Unet::bundled(gpu.clone()),
            Self::Arch(arch) => Unet::architecture(gpu.clone(), arch, 0),
        }
    }

    /// The scheduler config that comes with the model and the algorithm of its class: the
    /// folder's `scheduler_config.json` (diffusers' defaults when it has none), the bundled
    /// model's, or diffusers' defaults (DDPM).
    fn scheduler_config(&self) -> diffusion_wgpu::Result<(SchedulerConfig, Method)> {
        match self {
            Self::Folder(dir) => match ModelFiles::locate(dir)?.scheduler_config {
                Some(path) => SchedulerFile::from_file(&path).map(|f| (f.config, f.method)),
                None => Ok((SchedulerConfig::default(), Method::Ddpm)),
            },
            Self::Bundled => Ok((bundled_scheduler_config()?, Method::Ddpm)),
            Self::Arch(_) => Ok((SchedulerConfig::default(), Method::Ddpm)),
        }
    }
}
