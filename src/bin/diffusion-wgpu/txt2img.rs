//! `txt2img`: an image from a prompt with a Stable Diffusion pipeline folder.

use std::sync::Arc;
use std::time::Instant;

use diffusion_wgpu::{Gpu, NoiseSource, TextToImage, TextToImageSettings};
use indicatif::{ProgressBar, ProgressStyle};

use crate::adapter_name;
use crate::args::Txt2imgArgs;
use crate::sample::write_output;

/// Loads the pipeline, generates one image with a progress bar and writes it.
pub fn txt2img(gpu: Arc<Gpu>, args: &Txt2imgArgs) -> diffusion_wgpu::Result<()> {
    println!("adapter: {}", adapter_name(&gpu));
    let start = Instant::now();
    let mut pipeline = TextToImage::load(gpu, &args.model, args.variant.as_deref())?;
    let folder = (
        pipeline.scheduler_config().clone(),
        pipeline.scheduler_method().clone(),
    );
    let (config, class_method) = args.sampling.scheduler_config(Some(folder))?;
    pipeline.set_scheduler_config(config)?;
    println!(
        "loaded the pipeline in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let settings = TextToImageSettings {
        negative_prompt: args.negative_prompt.clone(),
        guidance_scale: args.guidance_scale,
        sampler: args.sampling.settings(&class_method),
        width: args.width,
        height: args.height,
        clip_skip: args.clip_skip,
        ..TextToImageSettings::new(&args.prompt)
    };
    let bar = ProgressBar::new(settings.sampler.num_inference_steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t = {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let image = pipeline.generate(&settings, NoiseSource::Seed(args.sampling.seed), &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64 + 1);
        bar.set_message(p.timestep.to_string());
    });
    bar.finish_and_clear();
    let image = image?;
    write_output(&args.out, &image, [1, 3, args.height, args.width])?;
    println!(
        "wrote {} ({} steps) in {:.1} s",
        args.out.display(),
        settings.sampler.num_inference_steps,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
