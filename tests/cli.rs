//! The command-line tool end to end: `forward` against diffusers' output, `sample` to a PNG
//! grid and to safetensors, and misuse giving a one-line error and a non-zero exit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::{
    DpmAlgorithm, DpmSolverOptions, FinalSigma, Method, NoiseSource, Sampler, SamplerSettings,
    SchedulerConfig, SchedulerFile, Unet, UniPcOptions,
};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn fixture_dir(name: &str) -> String {
    format!(
        "{}/tests/fixtures/diffusers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn cli(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffusion-wgpu"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Mesa prints an "error:" line of its own without it.
        let runtime = scratch("xdg-runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        command.env("XDG_RUNTIME_DIR", runtime);
    }
    let output = command.args(args).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), Dtype::F32);
    let data = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (view.shape().to_vec(), data)
}

#[test]
fn forward_writes_diffusers_output() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<i64> = refs["timesteps"].i64();
    let input = scratch("forward_in.safetensors");
    let out = scratch("forward_out.safetensors");
    let views = [
        (
            "sample",
            TensorView::new(Dtype::F32, vec![2, 3, 32, 32], bytemuck::cast_slice(&x)).unwrap(),
        ),
        (
            "timesteps",
            TensorView::new(Dtype::I64, vec![2], bytemuck::cast_slice(&timesteps)).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &input).unwrap();
    let model = fixture_dir("unet_small");
    let result = cli(&[
        "forward",
        "--model",
        &model,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    let (shape, eps) = read_f32(&out, "eps");
    assert_eq!(shape, [2, 3, 32, 32]);
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    assert!(error < 2e-5, "{error:.2e}");
}

#[test]
fn sample_writes_png_grids_and_safetensors() {
    let model = fixture_dir("unet_small");
    let png = scratch("grid.png");
    let result = cli(&[
        "sample",
        "--model",
        &model,
        "--steps",
        "2",
        "--batch",
        "3",
        "--seed",
        "5",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    // 3 images of 32x32 in a 2x2 grid with 2-pixel borders: 2 + 2 * (32 + 2) = 70.
    assert_eq!((info.width, info.height), (70, 70));
    assert_eq!(info.color_type, png::ColorType::Rgb);

    let tensors = scratch("x0.safetensors");
    let result = cli(&[
        "sample",
        "--model",
        &model,
        "--sampler",
        "ddpm",
        "--steps",
        "2",
        "--batch",
        "1",
        "--out",
        tensors.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    let (shape, x0) = read_f32(&tensors, "x0");
    assert_eq!(shape, [1, 3, 32, 32]);
    assert!(x0.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-6));
}

/// `sample --sampler NAME` (and a solver class's config file without `--sampler`) runs the
/// library's sampler with diffusers' defaults for that class, from the same seed.
#[test]
fn every_sampler_name_runs_its_solver() {
    let model = fixture_dir("unet_small");
    let unet = Unet::load(gpu(), &model).unwrap();
    let dpm = |solver_order, algorithm_type| {
        Method::DpmSolver(DpmSolverOptions {
            solver_order,
            algorithm_type,
            ..Default::default()
        })
    };
    let dpm_file = fixture_dir("scheduler_configs/dpm.pp3.lu/scheduler_config.json");
    let cases: Vec<(Vec<&str>, SchedulerConfig, Method)> = vec![
        (
            vec!["--sampler", "dpmpp-2m"],
            SchedulerConfig::default(),
            dpm(2, DpmAlgorithm::DpmSolverPlusPlus),
        ),
        (
            vec!["--sampler", "dpmpp-3m"],
            SchedulerConfig::default(),
            dpm(3, DpmAlgorithm::DpmSolverPlusPlus),
        ),
        (
            vec!["--sampler", "dpmpp-2m-sde"],
            SchedulerConfig::default(),
            dpm(2, DpmAlgorithm::SdeDpmSolverPlusPlus),
        ),
        (
            vec!["--sampler", "unipc"],
            SchedulerConfig::default(),
            Method::UniPc(UniPcOptions::default()),
        ),
        (
            vec!["--sampler", "euler"],
            SchedulerConfig::default(),
            Method::Euler {
                use_karras_sigmas: false,
                final_sigmas_type: FinalSigma::Zero,
            },
        ),
        (
            vec!["--sampler", "euler-a"],
            SchedulerConfig::default(),
            Method::EulerAncestral,
        ),
        {
            let file = SchedulerFile::from_file(&dpm_file).unwrap();
            (
                vec!["--scheduler-config", dpm_file.as_str()],
                file.config,
                file.method,
            )
        },
    ];
    for (flags, config, method) in cases {
        let out = scratch("solver.safetensors");
        let mut args = vec![
            "sample", "--model", &model, "--steps", "4", "--batch", "1", "--seed", "5",
        ];
        args.extend(&flags);
        args.extend(["--out", out.to_str().unwrap()]);
        let result = cli(&args);
        assert!(result.status.success(), "{flags:?}");
        let (_, x0) = read_f32(&out, "x0");
        let settings = SamplerSettings {
            method,
            num_inference_steps: 4,
            custom_timesteps: None,
        };
        let expected = Sampler::new(gpu(), config)
            .unwrap()
            .sample(
                &unet,
                [1, 3, 32, 32],
                &settings,
                NoiseSource::Seed(5),
                &mut |_| {},
            )
            .unwrap();
        let expected: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
        let error = rel_l2(&x0, &expected);
        assert!(error < 1e-6, "{flags:?}: {error:.2e}");
    }
}

/// Writes an 8-bit RGB PNG of `side` x `side` with a fixed pattern.
fn write_rgb_png(path: &Path, side: u32) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, side, side);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..side * side * 3).map(|i| (i * 37 % 256) as u8).collect();
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

#[test]
fn init_image_runs_image_to_image() {
    let model = fixture_dir("unet_small");
    let unet = Unet::load(gpu(), &model).unwrap();
    let png_path = scratch("init.png");
    write_rgb_png(&png_path, 32);
    let out = scratch("img2img.safetensors");
    let args = [
        "sample",
        "--model",
        &model,
        "--sampler",
        "dpmpp-2m",
        "--steps",
        "4",
        "--seed",
        "5",
        "--strength",
        "0.5",
        "--init-image",
        png_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let result = cli(&args);
    assert!(result.status.success());
    let (shape, x0) = read_f32(&out, "x0");
    assert_eq!(shape, [1, 3, 32, 32]);
    let image = diffusion_wgpu::io::read_png(&png_path).unwrap();
    assert_eq!(image.shape, [1, 3, 32, 32]);
    // Pixel (0, 0) is (0, 37, 74): 2 * p / 255 - 1 per channel, channel-major.
    assert_eq!(image.data[0], -1.0);
    assert!((image.data[32 * 32] - (2.0 * 37.0 / 255.0 - 1.0)).abs() < 1e-6);
    let settings = SamplerSettings {
        method: Method::DpmSolver(DpmSolverOptions::default()),
        num_inference_steps: 4,
        custom_timesteps: None,
    };
    let expected = Sampler::new(gpu(), SchedulerConfig::default())
        .unwrap()
        .sample_from_image(
            &unet,
            [1, 3, 32, 32],
            &settings,
            &image.data,
            0.5,
            NoiseSource::Seed(5),
            &mut |_| {},
        )
        .unwrap();
    let expected: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
    let error = rel_l2(&x0, &expected);
    assert!(error < 1e-6, "{error:.2e}");

    // An image of the wrong size, and a strength outside (0, 1], are one-line errors.
    let small = scratch("init_small.png");
    write_rgb_png(&small, 16);
    for (path, strength) in [(&small, "0.5"), (&png_path, "1.5")] {
        let result = cli(&[
            "sample",
            "--model",
            &model,
            "--steps",
            "4",
            "--strength",
            strength,
            "--init-image",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!result.status.success());
        let stderr = String::from_utf8_lossy(&result.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(if strength == "1.5" { "strength" } else { "x0" }),
            "{stderr}"
        );
    }
}

#[test]
fn mask_runs_repaint() {
    let model = fixture_dir("unet_small");
    let unet = Unet::load(gpu(), &model).unwrap();
    let png_path = scratch("inpaint.png");
    write_rgb_png(&png_path, 32);
    // A safetensors mask [1, 1, 32, 32]: keep the left half.
    let mask: Vec<f32> = (0..32 * 32)
        .map(|i| if i % 32 < 16 { 1.0 } else { 0.0 })
        .collect();
    let mask_path = scratch("mask.safetensors");
    let view =
        TensorView::new(Dtype::F32, vec![1, 1, 32, 32], bytemuck::cast_slice(&mask)).unwrap();
    safetensors::serialize_to_file([("mask", view)], None, &mask_path).unwrap();
    let out = scratch("inpainted.safetensors");
    let args = [
        "sample",
        "--model",
        &model,
        "--steps",
        "4",
        "--seed",
        "5",
        "--jump-length",
        "2",
        "--jump-n-sample",
        "2",
        "--init-image",
        png_path.to_str().unwrap(),
        "--mask",
        mask_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let result = cli(&args);
    assert!(result.status.success());
    let (_, x0) = read_f32(&out, "x0");
    let image = diffusion_wgpu::io::read_png(&png_path).unwrap();
    let options = diffusion_wgpu::RePaintOptions {
        eta: 0.0,
        jump_length: 2,
        jump_n_sample: 2,
    };
    let expected = Sampler::new(gpu(), SchedulerConfig::default())
        .unwrap()
        .inpaint(
            &unet,
            [1, 3, 32, 32],
            4,
            &options,
            &image.data,
            &mask,
            NoiseSource::Seed(5),
            &mut |_| {},
        )
        .unwrap();
    // The kept half is the image itself.
    assert!((expected[0] - image.data[0]).abs() < 1e-6);
    let expected: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
    let error = rel_l2(&x0, &expected);
    assert!(error < 1e-6, "{error:.2e}");
}

#[test]
fn no_subcommand_samples_the_bundled_model() {
    let png = scratch("bundled.png");
    let result = cli(&[
        "--steps",
        "2",
        "--batch",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains("adapter:") && stdout.contains("wrote"),
        "{stdout}"
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    // Two 28x28 grayscale images side by side with 2-pixel borders.
    assert_eq!((reader.info().width, reader.info().height), (62, 32));
    assert_eq!(reader.info().color_type, png::ColorType::Grayscale);
}

#[test]
fn misuse_gives_a_one_line_error_and_a_failure_code() {
    let missing = scratch("no_such_model");
    let bad_eta = fixture_dir("unet_small");
    for args in [
        vec!["sample", "--model", missing.to_str().unwrap()],
        vec!["sample", "--model", &bad_eta, "--eta", "-1", "--steps", "2"],
        vec!["sample", "--model", &bad_eta, "--steps", "0"],
    ] {
        let result = cli(&args);
        assert!(!result.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&result.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
