//! `sample`, `forward` and `toy`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use diffusion_wgpu::io::{read_png, read_tensors, take_tensor, write_png_grid, write_tensors};
use diffusion_wgpu::{
    Conditioning, Error, Gpu, LinearNoiseModel, NoiseModel, NoiseSource, RePaintOptions, Sampler,
    SamplerSettings,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{ForwardArgs, SampleArgs, ToyArgs};
use crate::{ModelSource, adapter_name};

/// Runs the sampler with a progress bar on stderr; returns x0 and the seconds it took.
/// `image`: an image-to-image start (the image and the strength).
#[allow(clippy::too_many_arguments)]
fn run_sampler(
    gpu: &Gpu,
    sampler: &Sampler,
    model: &dyn NoiseModel,
    shape: [usize; 4],
    settings: &SamplerSettings,
    noise: NoiseSource<'_>,
    conditioning: Conditioning,
    image: Option<(&[f32], f64)>,
) -> diffusion_wgpu::Result<(Vec<f32>, f64)> {
    let bar = ProgressBar::new(settings.num_inference_steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t = {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut run = match image {
        Some((image, strength)) => {
            sampler.start_from_image(model, shape, settings, image, strength, noise)?
        }
        None => sampler.start(model, shape, settings, noise)?,
    };
    run.set_conditioning(conditioning);
    let result = loop {
        match run.step_and_submit(model) {
            Ok(Some(p)) => {
                bar.set_length(p.total as u64);
                bar.set_position(p.index as u64 + 1);
                bar.set_message(p.timestep.to_string());
            }
            Ok(None) => break run.sample().read(gpu),
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    Ok((result?, start.elapsed().as_secs_f64()))
}

/// `sample`: images from the model, written as a PNG grid or as `x0` in a safetensors file.
pub fn sample(gpu: Arc<Gpu>, args: &SampleArgs) -> diffusion_wgpu::Result<()> {
    let source = ModelSource::from_args(&args.model);
    let unet = source.load(&gpu)?;
    let (config, class_method) = args
        .sampling
        .scheduler_config(Some(source.scheduler_config()?))?;
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
            let mut tensors = if is_png(path) {
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
    let noise_source = match (&init, &noise) {
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
    gpu.save_pipeline_cache();
    let conditioning = match labels.is_empty() {
        true => Conditioning::none(),
        false => Conditioning::class_labels(labels),
    };
    let mask = read_mask(args, shape)?;
    let image = image.as_ref().map(|x| (x.data.as_slice(), args.strength));
    let (x0, seconds) = match (&mask, image) {
        (Some(mask), Some((image, _))) => {
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
                noise_source,
                &mut |_| {},
            )?;
            (x0, start.elapsed().as_secs_f64())
        }
        _ => run_sampler(
            &gpu,
            &sampler,
            &unet,
            shape,
            &settings,
            noise_source,
            conditioning,
            image,
        )?,
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

/// Whether `path` names a PNG file.
fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// The RePaint mask of `--mask`: a PNG (white keeps the image; binarized at the middle grey,
/// as diffusers does) or a safetensors `mask` [B, 1|C, H, W] (1 keeps it).
fn read_mask(args: &SampleArgs, shape: [usize; 4]) -> diffusion_wgpu::Result<Option<Vec<f32>>> {
    let Some(path) = &args.mask else {
        return Ok(None);
    };
    if is_png(path) {
        let mut mask = read_png(path)?;
        mask.data
            .iter_mut()
            .for_each(|v| *v = if *v >= 0.0 { 1.0 } else { 0.0 });
        return Ok(Some(mask.data));
    }
    let mut tensors = read_tensors(path)?;
    let expected = [Some(shape[0]), None, Some(shape[2]), Some(shape[3])];
    Ok(Some(
        take_tensor(&mut tensors, path, "mask", &expected)?.data,
    ))
}

/// Writes `x0` as a PNG grid (a `.png` path) or a safetensors file.
pub fn write_output(path: &Path, x0: &[f32], shape: [usize; 4]) -> diffusion_wgpu::Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        write_png_grid(path, x0, shape)
    } else {
        write_tensors(path, &[("x0", &shape, x0)])
    }
}

/// `forward`: one U-Net forward pass on the tensors of a safetensors file.
pub fn forward(gpu: Arc<Gpu>, args: &ForwardArgs) -> diffusion_wgpu::Result<()> {
    let unet = ModelSource::from_args(&args.model).load(&gpu)?;
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

/// `toy`: sampling with the analytic model `eps = 0.1 * x`.
pub fn toy(gpu: Arc<Gpu>, args: &ToyArgs) -> diffusion_wgpu::Result<()> {
    let (config, class_method) = args.sampling.scheduler_config(None)?;
    let sampler = Sampler::new(gpu.clone(), config)?;
    let settings = args.sampling.settings(&class_method);
    let shape = [args.batch, 3, args.size, args.size];
    println!("adapter: {}", adapter_name(&gpu));
    let (x0, seconds) = run_sampler(
        &gpu,
        &sampler,
        &LinearNoiseModel::new(0.1),
        shape,
        &settings,
        NoiseSource::Seed(args.sampling.seed),
        Conditioning::none(),
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
