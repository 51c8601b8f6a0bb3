//! `bench`: speed of a U-Net and its sampling loop, against a PyTorch peer if asked.

use std::sync::Arc;
use std::time::Instant;

use diffusion_wgpu::bench::BenchSettings;
use diffusion_wgpu::bench::peer::{self, PeerModel};
use diffusion_wgpu::bench::soak::soak;
use diffusion_wgpu::gpu::AutotuneReport;
use diffusion_wgpu::model::unet::{architecture_config, write_bundled_model};
use diffusion_wgpu::model::unet_cond::UnetCondition;
use diffusion_wgpu::nn::{RandomWeights, TensorSource};
use diffusion_wgpu::{Error, Gpu, Precision, Sampler, SamplerSettings};
use indicatif::ProgressBar;

use crate::ModelSource;
use crate::args::BenchArgs;

/// `bench`: the report (or the soak run) for one model.
pub fn bench(gpu: Arc<Gpu>, args: &BenchArgs) -> diffusion_wgpu::Result<()> {
    if args.model.arch.as_deref() == Some(SD15_UNET) {
        return bench_conditional(gpu, args);
    }
    let source = ModelSource::from_args(&args.model);
    let unet = source.load(&gpu)?;
    let (name, (scheduler, _)) = (source.name(), source.scheduler_config()?);
    // The report names a precision other than the default.
    let name = match (gpu.precision(), gpu.cooperative_matrix()) {
        (Precision::F32, _) => name,
        (precision, None) => format!("{name} ({precision:?} precision)"),
        (precision, Some(coop)) => format!(
            "{name} ({precision:?} precision, cooperative matrices: {})",
            coop.describe()
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
            let model = peer_model(&source)?;
            let peer = peer::run(
                python,
                &model,
                &args.batch,
                args.repeats,
                args.steps,
                &args.peer_device,
            );
            if let PeerModel::Folder(dir) | PeerModel::ConfigOnly(dir) = &model
                && !matches!(source, ModelSource::Folder(_))
            {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some(peer?)
        }
        None => None,
    };
    let autotune = unet.gpu().autotune_report();
    if args.json {
        let mut json = report.to_json();
        if let Some(peer) = &peer {
            json["peer"] = peer.json.clone();
            json["peer_ratios"] = peer.ratios_json(&report);
        }
        if let Some(autotune) = &autotune {
            json["autotune"] = autotune_json(autotune);
        }
        println!("{json:#}");
    } else {
        print!("{}", report.to_text());
        if let Some(peer) = &peer {
            print!("{}", peer.text(&report));
        }
        if let Some(autotune) = &autotune {
            print!("{}", autotune_text(autotune));
        }
    }
    Ok(())
}

/// The plan each distinct tiled-convolution layer shape got from `--autotune`.
fn autotune_text(report: &AutotuneReport) -> String {
    let mut text = format!(
        "autotune {}: {} layer shapes, {} chosen in this run ({:.1} s of measuring), cache {}\n",
        report.mode.name(),
        report.choices.len(),
        report.tuned_now,
        report.seconds,
        report
            .cache_file
            .as_ref()
            .map_or("none".to_string(), |path| path.display().to_string()),
    );
    for (shape, choice) in &report.choices {
        let how = if choice.measured {
            ""
        } else {
            " (shape rule: budget spent)"
        };
        text.push_str(&format!(
            "  {shape}: {} split-K {}{how}\n",
            choice.tile.name(),
            choice.split_k
        ));
    }
    text
}

/// [`autotune_text`] as JSON.
fn autotune_json(report: &AutotuneReport) -> serde_json::Value {
    let choices: Vec<serde_json::Value> = report
        .choices
        .iter()
        .map(|(shape, choice)| {
            serde_json::json!({
                "shape": shape,
                "tile": choice.tile.name(),
                "split_k": choice.split_k,
                "measured": choice.measured,
            })
        })
        .collect();
    serde_json::json!({
        "mode": report.mode.name(),
        "chosen_now": report.tuned_now,
        "seconds": report.seconds,
        "choices": choices,
    })
}

/// The model folder the PyTorch peer loads: the checkpoint folder, or the bundled model or the
/// architecture's config written to a temporary folder.
fn peer_model(source: &ModelSource) -> diffusion_wgpu::Result<PeerModel> {
    let dir = std::env::temp_dir().join(format!("diffusion-wgpu-bench-{}", std::process::id()));
    match source {
        ModelSource::Folder(dir) => Ok(PeerModel::Folder(dir.clone())),
        ModelSource::Arch(arch) => {
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
        ModelSource::Bundled => {
            write_bundled_model(&dir)?;
            Ok(PeerModel::Folder(dir))
        }
    }
}

/// The conditional U-Net architecture `bench --arch` runs with random weights.
const SD15_UNET: &str = "sd15-unet";

/// `bench --arch sd15-unet`: Stable Diffusion 1.5's U-Net with random weights, one forward
/// pass per batch size (with 77 random text tokens; `--size` latents, default 64), timed and
/// divided into GFLOP/s, then (unless `--no-profile`) the GPU time per kernel family. Building
/// the graph checks every tensor against the device's limits.
fn bench_conditional(gpu: Arc<Gpu>, args: &BenchArgs) -> diffusion_wgpu::Result<()> {
    let start = Instant::now();
    let unet = UnetCondition::architecture(gpu, SD15_UNET, 0)?;
    println!(
        "{SD15_UNET} (random weights) built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let config = unet.config();
    let size = args.size.or(config.sample_size).unwrap_or(64);
    let tokens = 77;
    for &batch in &args.batch {
        let shape = [batch, config.in_channels, size, size];
        let flops = unet.forward_flops(shape, tokens)?;
        let mut random = RandomWeights::new(1);
        let sample = random.take("sample", &shape)?;
        let context = random.take("context", &[batch, tokens, config.cross_attention_dim])?;
        let timesteps = vec![500; batch];
        let mut best = f64::INFINITY;
        for _ in 0..args.repeats.max(1) {
            let start = Instant::now();
            unet.forward(&sample, shape, &timesteps, &context, tokens)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "batch {batch}, {size}x{size} latents: forward {:.1} ms, {:.1} GFLOP/s ({:.1} GFLOP)",
            best * 1e3,
            flops as f64 / best / 1e9,
            flops as f64 / 1e9
        );
        if !args.no_profile {
            print!("{}", unet.profile_forward(shape, tokens, args.repeats)?);
        }
    }
    Ok(())
}
