//! `bench`: speed of a U-Net and its sampling loop, against a PyTorch peer if asked.

use std::sync::Arc;

use diffusion_wgpu::bench::BenchSettings;
use diffusion_wgpu::bench::peer::{self, PeerModel};
use diffusion_wgpu::bench::soak::soak;
use diffusion_wgpu::model::unet::{architecture_config, write_bundled_model};
use diffusion_wgpu::{Error, Gpu, Sampler, SamplerSettings};
use indicatif::ProgressBar;

use crate::ModelSource;
use crate::args::BenchArgs;

/// `bench`: the report (or the soak run) for one model.
pub fn bench(gpu: Arc<Gpu>, args: &BenchArgs) -> diffusion_wgpu::Result<()> {
    let source = ModelSource::from_args(&args.model);
    let unet = source.load(&gpu)?;
    let (name, (scheduler, _)) = (source.name(), source.scheduler_config()?);
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
