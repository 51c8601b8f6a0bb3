//! `ModelFiles`: finding a UNet's `config.json` and weights in a diffusers model folder.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The config file of a diffusers model folder.
const CONFIG: &str = "config.json";
/// The weights file of a diffusers model folder.
const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
/// The PyTorch pickle weights older folders hold instead.
const WEIGHTS_BIN: &str = "diffusion_pytorch_model.bin";
/// The index of a sharded checkpoint.
const WEIGHTS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
/// The scheduler config file.
const SCHEDULER_CONFIG: &str = "scheduler_config.json";

/// The files of a UNet model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The `UNet2DModel` `config.json`.
    pub config: PathBuf,
    /// The safetensors checkpoint (`diffusion_pytorch_model.safetensors`, or its one variant
    /// such as `diffusion_pytorch_model.fp16.safetensors` when the plain file is absent).
    pub weights: PathBuf,
    /// The scheduler's `scheduler_config.json`, when the folder has one.
    pub scheduler_config: Option<PathBuf>,
}

impl ModelFiles {
    /// Finds the files of a model folder, which is either
    ///
    /// - a `UNet2DModel` folder (what `UNet2DModel.save_pretrained` writes): `config.json` and
    ///   `diffusion_pytorch_model.safetensors`, with an optional `scheduler_config.json` beside
    ///   them, or
    /// - a diffusers pipeline folder (what `DDPMPipeline.save_pretrained` writes): those two
    ///   files in `unet/`, and `scheduler/scheduler_config.json` (optional here).
    ///
    /// A missing config or weights file is an [`Error::Io`] (`NotFound`) with the path looked
    /// for; a folder that is neither layout is an [`Error::Config`] saying what it should hold;
    /// PyTorch `.bin` weights without a safetensors file are an [`Error::Checkpoint`] saying how
    /// to convert them.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let source = if dir.exists() {
                std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "expected a model folder, found a file",
                )
            } else {
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found")
            };
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            });
        }

        let flat = [CONFIG, WEIGHTS, WEIGHTS_BIN, WEIGHTS_INDEX]
            .iter()
            .any(|name| dir.join(name).is_file())
            || find_variants(dir).is_ok_and(|v| !v.is_empty());
        if flat {
            let (config, weights) = unet_files(dir)?;
            let scheduler = dir.join(SCHEDULER_CONFIG);
            return Ok(Self {
                config,
                weights,
                scheduler_config: scheduler.is_file().then_some(scheduler),
            });
        }

        let unet = dir.join("unet");
        if unet.is_dir() {
            let (config, weights) = unet_files(&unet)?;
            let scheduler = dir.join("scheduler").join(SCHEDULER_CONFIG);
            return Ok(Self {
                config,
                weights,
                scheduler_config: scheduler.is_file().then_some(scheduler),
            });
        }

        let hint = if dir.join("model_index.json").is_file() {
            " (it has a model_index.json but no unet/ folder: this pipeline's denoiser is not \
             a UNet2DModel stored as `unet`)"
        } else {
            ""
        };
        Err(Error::Config {
            source_name: dir.display().to_string(),
            key: "(folder)".into(),
            message: format!(
                "not a diffusers model folder{hint}: expected {CONFIG} and {WEIGHTS} in it, or a \
                 pipeline folder with unet/{CONFIG}, unet/{WEIGHTS} and \
                 scheduler/{SCHEDULER_CONFIG}"
            ),
        })
    }
}

/// The config and weights of a folder holding one model.
fn unet_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let config = dir.join(CONFIG);
    if !config.is_file() {
        return Err(not_found(config, "the model's config.json"));
    }
    let weights = dir.join(WEIGHTS);
    if weights.is_file() {
        return Ok((config, weights));
    }
    let variants = find_variants(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    match variants.as_slice() {
        [one] => return Ok((config, one.clone())),
        [] => {}
        several => {
            let names: Vec<String> = several
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            return Err(Error::Checkpoint {
                file: weights.display().to_string(),
                tensor: "(file)".into(),
                message: format!(
                    "not found, and several variants are: {}; keep one, or rename the one to use \
                     to {WEIGHTS}",
                    names.join(", ")
                ),
            });
        }
    }
    if dir.join(WEIGHTS_INDEX).is_file() {
        return Err(Error::Checkpoint {
            file: dir.join(WEIGHTS_INDEX).display().to_string(),
            tensor: "(file)".into(),
            message: "sharded checkpoints are not supported; save the model as one file \
                      (`save_pretrained(..., max_shard_size=\"100GB\")`)"
                .into(),
        });
    }
    let bin = dir.join(WEIGHTS_BIN);
    if bin.is_file() {
        return Err(Error::Checkpoint {
            file: bin.display().to_string(),
            tensor: "(file)".into(),
            message: format!(
                "PyTorch .bin checkpoints are not supported; convert it to {WEIGHTS} with \
                 `UNet2DModel.from_pretrained(folder).save_pretrained(folder, \
                 safe_serialization=True)`"
            ),
        });
    }
    Err(not_found(weights, "the model's safetensors weights"))
}

/// `diffusion_pytorch_model.<variant>.safetensors` files in `dir`, sorted.
fn find_variants(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let variant = name
            .strip_prefix("diffusion_pytorch_model.")
            .and_then(|rest| rest.strip_suffix(".safetensors"));
        if variant.is_some_and(|v| !v.is_empty() && !v.contains('.')) && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn not_found(path: PathBuf, what: &str) -> Error {
    Error::Io {
        path,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the target directory's temp space.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "diffusion_wgpu_files_{}_{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[track_caller]
    fn io_not_found(result: Result<ModelFiles>, expected: &Path) {
        match result {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, expected);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!(
                "expected NotFound for {}, got {other:?}",
                expected.display()
            ),
        }
    }

    #[test]
    fn flat_folder() {
        let dir = scratch("flat");
        touch(&dir.join(CONFIG));
        io_not_found(ModelFiles::locate(&dir), &dir.join(WEIGHTS));
        touch(&dir.join(WEIGHTS));
        let files = ModelFiles::locate(&dir).unwrap();
        assert_eq!(
            files,
            ModelFiles {
                config: dir.join(CONFIG),
                weights: dir.join(WEIGHTS),
                scheduler_config: None,
            }
        );
        touch(&dir.join(SCHEDULER_CONFIG));
        let files = ModelFiles::locate(&dir).unwrap();
        assert_eq!(files.scheduler_config, Some(dir.join(SCHEDULER_CONFIG)));
        std::fs::remove_file(dir.join(CONFIG)).unwrap();
        io_not_found(ModelFiles::locate(&dir), &dir.join(CONFIG));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pipeline_folder() {
        let dir = scratch("pipeline");
        touch(&dir.join("model_index.json"));
        touch(&dir.join("unet").join(CONFIG));
        io_not_found(ModelFiles::locate(&dir), &dir.join("unet").join(WEIGHTS));
        touch(&dir.join("unet").join(WEIGHTS));
        let files = ModelFiles::locate(&dir).unwrap();
        assert_eq!(files.config, dir.join("unet").join(CONFIG));
        assert_eq!(files.weights, dir.join("unet").join(WEIGHTS));
        assert_eq!(files.scheduler_config, None);
        touch(&dir.join("scheduler").join(SCHEDULER_CONFIG));
        let files = ModelFiles::locate(&dir).unwrap();
        assert_eq!(
            files.scheduler_config,
            Some(dir.join("scheduler").join(SCHEDULER_CONFIG))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bin_variants_and_bad_folders() {
        let dir = scratch("bin");
        touch(&dir.join(CONFIG));
        touch(&dir.join(WEIGHTS_BIN));
        match ModelFiles::locate(&dir) {
            Err(Error::Checkpoint { file, message, .. }) => {
                assert!(file.ends_with(WEIGHTS_BIN), "{file}");
                assert!(message.contains("not supported"), "{message}");
                assert!(message.contains("safe_serialization=True"), "{message}");
            }
            other => panic!("expected a Checkpoint error, got {other:?}"),
        }
        touch(&dir.join("diffusion_pytorch_model.fp16.safetensors"));
        let files = ModelFiles::locate(&dir).unwrap();
        assert_eq!(
            files.weights,
            dir.join("diffusion_pytorch_model.fp16.safetensors")
        );
        touch(&dir.join("diffusion_pytorch_model.ema.safetensors"));
        match ModelFiles::locate(&dir) {
            Err(Error::Checkpoint { message, .. }) => {
                assert!(message.contains("several variants"), "{message}");
            }
            other => panic!("expected a Checkpoint error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);

        let empty = scratch("empty");
        match ModelFiles::locate(&empty) {
            Err(Error::Config { key, message, .. }) => {
                assert_eq!(key, "(folder)");
                assert!(message.contains("config.json"), "{message}");
                assert!(message.contains("unet/"), "{message}");
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&empty);
        io_not_found(
            ModelFiles::locate(&empty.join("nowhere")),
            &empty.join("nowhere"),
        );
    }
}
