//! Autotuned tiled convolutions (`GpuOptions::autotune`) on the small U-Net fixture
//! (tests/fixtures/diffusers/unet_small_forward), with the GPU kernel set forced on whatever
//! adapter the tests have: the output against diffusers' f64 forward (2e-5), bitwise
//! repeatability through the cache file, plans read back from the file, and a corrupt file or
//! an unwritable directory as warnings. No timing is asserted.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use common::{fixture, rel_l2};
use diffusion_wgpu::{Autotune, ConvTiles, GemmTile, Gpu, GpuOptions, Tuning, Unet};

const TOLERANCE: f64 = 2e-5;

/// Warnings logged by the library, kept so tests can look for theirs.
struct Warnings(Mutex<Vec<String>>);

impl log::Log for Warnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let message = record.args().to_string();
            eprintln!("{}: {message}", record.level());
            self.0.lock().unwrap().push(message);
        }
    }
    fn flush(&self) {}
}

fn warnings() -> &'static Warnings {
    static WARNINGS: OnceLock<&'static Warnings> = OnceLock::new();
    WARNINGS.get_or_init(|| {
        let warnings: &'static Warnings = Box::leak(Box::new(Warnings(Mutex::default())));
        log::set_logger(warnings).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
        warnings
    })
}

/// Whether a warning naming `path` was logged.
fn warned_about(path: &Path) -> bool {
    let needle = path.display().to_string();
    let logged = warnings().0.lock().unwrap();
    logged.iter().any(|message| message.contains(&needle))
}

/// A fresh directory for one test's cache.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "diffusion-wgpu-autotune-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&dir);
    dir
}

/// A device with the GPU kernel set (tiled convolutions, shape rule) and `mode`, its choices
/// kept in `dir`.
fn gpu(mode: Autotune, dir: Option<&Path>) -> Arc<Gpu> {
    warnings();
    let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let gpu = Gpu::new(&GpuOptions::default())
        .unwrap()
        .with_tuning(tuning)
        .with_autotune(mode, dir.map(Path::to_path_buf));
    Arc::new(gpu)
}

/// The small U-Net's output on the fixture's input, and its relative L2 error against
/// diffusers' f64 forward.
fn forward(gpu: &Arc<Gpu>) -> (Vec<f32>, f64) {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let dir = format!(
        "{}/tests/fixtures/diffusers/unet_small",
        env!("CARGO_MANIFEST_DIR")
    );
    let unet = Unet::load(gpu.clone(), dir).unwrap();
    let eps = unet
        .forward(
            &refs["x"].f32(),
            [2, 3, 32, 32],
            &refs["timesteps"].u32(),
            None,
        )
        .unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    (eps, error)
}

/// How many values differ between two outputs, and their relative L2 difference.
fn difference(a: &[f32], b: &[f32]) -> (usize, f64) {
    let differing = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
    let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    (differing.count(), rel_l2(a, &b64))
}

#[test]
fn a_quick_tuned_forward_matches_diffusers_and_repeats_bit_for_bit_from_its_cache() {
    let dir = scratch_dir("repeat");
    let first = gpu(Autotune::Quick, Some(&dir));
    let (eps, error) = forward(&first);
    let report = first.autotune_report().unwrap();
    println!(
        "quick: eps vs f64 {error:.2e}; {} shapes, {} measured, {:.1} s",
        report.choices.len(),
        report.choices.iter().filter(|(_, c)| c.measured).count(),
        report.seconds
    );
    assert!(error < TOLERANCE, "{error:.2e}");
    assert!(!report.choices.is_empty() && report.tuned_now == report.choices.len());
    assert!(report.choices.iter().any(|(_, choice)| choice.measured));
    assert!(report.cache_file.as_ref().unwrap().is_file());

    let second = gpu(Autotune::Quick, Some(&dir));
    let (again, _) = forward(&second);
    let reread = second.autotune_report().unwrap();
    assert_eq!(reread.tuned_now, 0, "every shape read from the cache");
    assert_eq!(reread.choices, report.choices);
    assert!(eps == again, "the same plans give the same bits");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// FNV-1a, as the cache file's checksum line holds it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The plans a cache file names are the ones the layers run: a file whose every entry says
/// 32x64 with K split 2 gives the output of that forced tile, bit for bit, within 2e-5 of
/// diffusers. Also measures what the README says about a tuned and an untuned run: another
/// split order changes the last bits, another tile alone does not.
#[test]
fn the_layers_run_the_plans_the_cache_file_names() {
    let dir = scratch_dir("edited");
    let (untuned, _) = forward(&gpu(Autotune::Off, None));
    let tuned = gpu(Autotune::Quick, Some(&dir));
    forward(&tuned);
    let path = tuned.autotune_report().unwrap().cache_file.unwrap();
    drop(tuned);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut edited = String::new();
    for line in text.lines().filter(|line| !line.starts_with("checksum ")) {
        match line.rsplit_once(" = ") {
            Some((key, _)) => edited.push_str(&format!("{key} = 32x64 2 measured\n")),
            None => edited.push_str(&format!("{line}\n")),
        }
    }
    edited.push_str(&format!("checksum {:016x}\n", fnv1a(edited.as_bytes())));
    std::fs::write(&path, edited).unwrap();

    let (from_file, error) = forward(&gpu(Autotune::Quick, Some(&dir)));
    println!("every layer 32x64 split 2 from the file: eps vs f64 {error:.2e}");
    assert!(error < TOLERANCE, "{error:.2e}");
    let fixed = |tile, split_k| {
        let tuning = Tuning {
            conv_tiles: ConvTiles::Fixed { tile, split_k },
            ..Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu)
        };
        let gpu = Gpu::new(&GpuOptions::default())
            .unwrap()
            .with_tuning(tuning);
        forward(&Arc::new(gpu)).0
    };
    assert!(
        from_file == fixed(GemmTile::M32N64, 2),
        "the file's plans ran"
    );
    let unsplit = [
        fixed(GemmTile::M32N32, 1),
        fixed(GemmTile::M32N64, 1),
        fixed(GemmTile::M64N64, 1),
    ];
    let show = |(count, rel): (usize, f64)| {
        format!("{count} of {} values, rel L2 {rel:.1e}", untuned.len())
    };
    println!(
        "differences: rule vs the file's plans {}; rule vs 32x32 unsplit {}; 32x32 vs 32x64 unsplit {}; 32x32 vs 64x64 unsplit {}",
        show(difference(&untuned, &from_file)),
        show(difference(&untuned, &unsplit[0])),
        show(difference(&unsplit[0], &unsplit[1])),
        show(difference(&unsplit[0], &unsplit[2])),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_cache_file_is_a_warning_and_its_shapes_are_measured_again() {
    let dir = scratch_dir("corrupt");
    let first = gpu(Autotune::Quick, Some(&dir));
    forward(&first);
    let path = first.autotune_report().unwrap().cache_file.unwrap();
    drop(first);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let second = gpu(Autotune::Quick, Some(&dir));
    let (_, error) = forward(&second);
    assert!(warned_about(&path), "no warning about {}", path.display());
    assert!(error < TOLERANCE, "{error:.2e}");
    let report = second.autotune_report().unwrap();
    assert_eq!(report.tuned_now, report.choices.len(), "all measured again");
    // And the file was written whole again.
    assert_eq!(
        gpu(Autotune::Quick, Some(&dir))
            .autotune_report()
            .unwrap()
            .choices,
        report.choices
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_cache_directory_is_a_warning_and_the_model_still_runs() {
    // A directory under a regular file cannot be created, even by root.
    let file = scratch_dir("unwritable");
    std::fs::write(&file, "not a directory").unwrap();
    let dir = file.join("cache");
    let gpu = gpu(Autotune::Quick, Some(&dir));
    let (_, error) = forward(&gpu);
    assert!(error < TOLERANCE, "{error:.2e}");
    let path = gpu.autotune_report().unwrap().cache_file.unwrap();
    assert!(warned_about(&path), "no warning about {}", path.display());
    assert!(!gpu.autotune_report().unwrap().choices.is_empty());
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn autotune_changes_nothing_on_the_cpu_kernel_set() {
    let cpu = Tuning::for_device_type(wgpu::DeviceType::Cpu);
    let with = |mode| {
        let gpu = Gpu::new(&GpuOptions::default())
            .unwrap()
            .with_tuning(cpu)
            .with_autotune(mode, None);
        let gpu = Arc::new(gpu);
        let (eps, _) = forward(&gpu);
        (eps, gpu.autotune_report())
    };
    let (off, none) = with(Autotune::Off);
    let (quick, report) = with(Autotune::Quick);
    assert!(none.is_none());
    assert!(report.unwrap().choices.is_empty());
    assert!(off == quick);
}
