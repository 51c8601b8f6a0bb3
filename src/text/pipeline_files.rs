//! `PipelineFiles`: the parts of a diffusers Stable Diffusion pipeline folder, as
//! `StableDiffusionPipeline.save_pretrained` writes it, located and checked before anything is
//! loaded.
//!
//! ```text
//! model_index.json            {"unet": ["diffusers", "UNet2DConditionModel"], ...}
//! unet/config.json            unet/diffusion_pytorch_model[.VARIANT].safetensors
//! vae/config.json             vae/diffusion_pytorch_model[.VARIANT].safetensors
//! text_encoder/config.json    text_encoder/model[.VARIANT].safetensors
//! tokenizer/tokenizer_config.json, vocab.json + merges.txt (or tokenizer.json)
//! scheduler/scheduler_config.json
//! ```
//!
//! Sharded weights (`NAME.safetensors.index.json`, or `NAME.safetensors.index.VARIANT.json`)
//! are resolved to their shard files. PyTorch pickles (`*.bin`) are refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::clip_config::ClipTextConfig;
use super::tokenizer::ClipTokenizer;
use super::vae_config::VaeConfig;
use crate::config_json::JsonObject;
use crate::error::{Error, Result};

/// A model part of the folder: its config and weight files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPart {
    /// The class `model_index.json` names (`UNet2DConditionModel`, `AutoencoderKL`,
    /// `CLIPTextModel`).
    pub class_name: String,
    /// The part's folder.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: PathBuf,
    /// Its safetensors files: one, or the shards of a sharded checkpoint.
    pub weights: Vec<PathBuf>,
    /// The variant the weights are (`Some("fp16")` for `*.fp16.safetensors`), `None` for the
    /// plain files.
    pub variant: Option<String>,
}

/// The tokenizer part: the files [`ClipTokenizer::from_folder`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerPart {
    /// The class `model_index.json` names (`CLIPTokenizer` or `CLIPTokenizerFast`).
    pub class_name: String,
    /// The `tokenizer/` folder, holding `tokenizer_config.json` and `vocab.json` + `merges.txt`
    /// or `tokenizer.json`.
    pub dir: PathBuf,
}

/// The scheduler part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerPart {
    /// The scheduler class `model_index.json` names (`PNDMScheduler`, `DDIMScheduler`, ...).
    pub class_name: String,
    /// Its `scheduler_config.json`.
    pub config: PathBuf,
}

/// The located parts of a Stable Diffusion pipeline folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineFiles {
    /// The folder.
    pub root: PathBuf,
    /// The pipeline class of `model_index.json` (`StableDiffusionPipeline` or
    /// `StableDiffusionImg2ImgPipeline`; empty when the file names none).
    pub class_name: String,
    /// The `UNet2DConditionModel`.
    pub unet: ModelPart,
    /// The `AutoencoderKL`.
    pub vae: ModelPart,
    /// The `CLIPTextModel`.
    pub text_encoder: ModelPart,
    /// The `CLIPTokenizer`.
    pub tokenizer: TokenizerPart,
    /// The scheduler.
    pub scheduler: SchedulerPart,
}

/// The pipelines whose folders are read: text-to-image and image-to-image Stable Diffusion 1.x /
/// 2.x (their folders are the same).
const PIPELINE_CLASSES: &[&str] = &["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"];

/// What `model_index.json` may name for a part, and the stem of its weights files.
struct PartSpec {
    name: &'static str,
    library: &'static str,
    /// The accepted classes; empty: any.
    classes: &'static [&'static str],
    weights_stem: &'static str,
}

const UNET: PartSpec = PartSpec {
    name: "unet",
    library: "diffusers",
    classes: &["UNet2DConditionModel"],
    weights_stem: "diffusion_pytorch_model",
};
const VAE: PartSpec = PartSpec {
    name: "vae",
    library: "diffusers",
    classes: &["AutoencoderKL"],
    weights_stem: "diffusion_pytorch_model",
};
const TEXT_ENCODER: PartSpec = PartSpec {
    name: "text_encoder",
    library: "transformers",
    classes: &["CLIPTextModel"],
    weights_stem: "model",
};
const TOKENIZER: PartSpec = PartSpec {
    name: "tokenizer",
    library: "transformers",
    classes: &["CLIPTokenizer", "CLIPTokenizerFast"],
    weights_stem: "",
};
const SCHEDULER: PartSpec = PartSpec {
    name: "scheduler",
    library: "diffusers",
    classes: &[],
    weights_stem: "",
};

impl PipelineFiles {
    /// Locates the parts of the pipeline folder `root`. With `variant` (`Some("fp16")`), a part's
    /// `*.VARIANT.safetensors` weights are taken where they exist and the plain ones elsewhere,
    /// as diffusers does.
    ///
    /// Errors: [`Error::InvalidSetting`] for a variant that is not a plain name;
    /// [`Error::Config`] for a `model_index.json` entry that is missing, malformed or names an
    /// unsupported pipeline, library or class (SDXL's `StableDiffusionXLPipeline` among them); [`Error::Pipeline`] naming the part and path of
    /// a missing folder, config, tokenizer file or weights file (including `*.bin`-only parts and
    /// missing shards); [`Error::Io`] for a file that cannot be read.
    pub fn open(root: &Path, variant: Option<&str>) -> Result<Self> {
        if let Some(v) = variant {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::InvalidSetting {
                    setting: "variant",
                    message: format!("{v:?} is not a variant name like \"fp16\""),
                });
            }
        }
        let index = JsonObject::from_file(&root.join("model_index.json"))?;
        let class_name = match index.map.get("_class_name") {
            Some(Value::String(name)) if PIPELINE_CLASSES.contains(&name.as_str()) => name.clone(),
            Some(other) => {
                return Err(index.error(
                    "_class_name",
                    format!(
                        "unsupported pipeline {other} (supported: {})",
                        PIPELINE_CLASSES.join(", ")
                    ),
                ));
            }
            None => String::new(),
        };
        let model = |spec: &PartSpec| -> Result<ModelPart> {
            let class_name = component_class(&index, spec)?;
            let dir = part_dir(root, spec.name)?;
            let config = existing(&dir, "config.json", spec.name)?;
            let (weights, variant) = weight_files(&dir, spec.name, spec.weights_stem, variant)?;
            Ok(ModelPart {
                class_name,
                dir,
                config,
                weights,
                variant,
            })
        };
        let unet = model(&UNET)?;
        let vae = model(&VAE)?;
        let text_encoder = model(&TEXT_ENCODER)?;

        let class_name_tokenizer = component_class(&index, &TOKENIZER)?;
        let dir = part_dir(root, TOKENIZER.name)?;
        existing(&dir, "tokenizer_config.json", TOKENIZER.name)?;
        if !dir.join("tokenizer.json").is_file() || dir.join("vocab.json").exists() {
            existing(&dir, "vocab.json", TOKENIZER.name)?;
            existing(&dir, "merges.txt", TOKENIZER.name)?;
        }
        let tokenizer = TokenizerPart {
            class_name: class_name_tokenizer,
            dir,
        };

        let scheduler = SchedulerPart {
            class_name: component_class(&index, &SCHEDULER)?,
            config: existing(
                &part_dir(root, SCHEDULER.name)?,
                "scheduler_config.json",
                SCHEDULER.name,
            )?,
        };
        Ok(Self {
            root: root.to_path_buf(),
            class_name,
            unet,
            vae,
            text_encoder,
            tokenizer,
            scheduler,
        })
    }

    /// Reads the tokenizer.
    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        ClipTokenizer::from_folder(&self.tokenizer.dir)
    }

    /// Reads the text encoder's config and checks that it fits the tokenizer: every token id
    /// below `vocab_size`, `model_max_length` no longer than `max_position_embeddings`.
    pub fn text_encoder_config(&self, tokenizer: &ClipTokenizer) -> Result<ClipTextConfig> {
        let config = ClipTextConfig::from_file(&self.text_encoder.config)?;
        let source_name = self.text_encoder.config.display().to_string();
        let mismatch = |key: &str, message: String| Error::Config {
            source_name: source_name.clone(),
            key: key.to_string(),
            message,
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(mismatch(
                "vocab_size",
                format!(
                    "{} is smaller than the tokenizer's {} ids",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        if tokenizer.model_max_length() > config.max_position_embeddings {
            return Err(mismatch(
                "max_position_embeddings",
                format!(
                    "{} is smaller than the tokenizer's model_max_length {}",
                    config.max_position_embeddings,
                    tokenizer.model_max_length()
                ),
            ));
        }
        Ok(config)
    }

    /// Reads the VAE's config.
    pub fn vae_config(&self) -> Result<VaeConfig> {
        VaeConfig::from_file(&self.vae.config)
    }
}

/// The class of a part in `model_index.json`: a `[library, class]` pair.
fn component_class(index: &JsonObject, spec: &PartSpec) -> Result<String> {
    let part = spec.name;
    let value = index.required(part)?;
    let pair = value
        .as_array()
        .filter(|pair| pair.len() == 2)
        .and_then(|pair| Some((pair[0].as_str()?, pair[1].as_str()?)));
    let Some((lib, class)) = pair else {
        return Err(index.error(
            part,
            format!("expected a [library, class] pair of strings, got {value}"),
        ));
    };
    if lib != spec.library {
        return Err(index.error(
            part,
            format!(
                "library \"{lib}\" is not supported (expected \"{}\")",
                spec.library
            ),
        ));
    }
    if !spec.classes.is_empty() && !spec.classes.contains(&class) {
        return Err(index.error(
            part,
            format!(
                "class \"{class}\" is not supported (supported: {})",
                spec.classes.join(", ")
            ),
        ));
    }
    Ok(class.to_string())
}

fn missing(path: PathBuf, part: &str, message: &str) -> Error {
    Error::Pipeline {
        path,
        part: part.to_string(),
        message: message.to_string(),
    }
}

fn part_dir(root: &Path, part: &str) -> Result<PathBuf> {
    let dir = root.join(part);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(missing(dir, part, "folder missing"))
    }
}

fn existing(dir: &Path, file: &str, part: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(missing(path, part, "file missing"))
    }
}

/// The weight files of a model part and the variant they are: `STEM[.VARIANT].safetensors`, or
/// the shards listed by `STEM.safetensors.index[.VARIANT].json`, the variant preferred.
fn weight_files(
    dir: &Path,
    part: &str,
    stem: &str,
    variant: Option<&str>,
) -> Result<(Vec<PathBuf>, Option<String>)> {
    let mut candidates: Vec<(String, String, Option<String>)> = Vec::new();
    if let Some(v) = variant {
        candidates.push((
            format!("{stem}.{v}.safetensors"),
            format!("{stem}.safetensors.index.{v}.json"),
            Some(v.to_string()),
        ));
    }
    candidates.push((
        format!("{stem}.safetensors"),
        format!("{stem}.safetensors.index.json"),
        None,
    ));
    for (single, index, found_variant) in &candidates {
        if dir.join(single).is_file() {
            return Ok((vec![dir.join(single)], found_variant.clone()));
        }
        if dir.join(index).is_file() {
            let shards = shard_files(&dir.join(index), part)?;
            return Ok((shards, found_variant.clone()));
        }
    }
    let names: Vec<&str> = candidates.iter().map(|(s, _, _)| s.as_str()).collect();
    let pickle = dir.join(format!("{stem}.bin")).is_file();
    let message = if pickle {
        format!(
            "only PyTorch pickle weights ({stem}.bin), which are not supported: convert them to {}",
            names.join(" or ")
        )
    } else {
        format!("no weights: expected {}", names.join(" or "))
    };
    Err(missing(dir.to_path_buf(), part, &message))
}

/// The shard files a safetensors index's `weight_map` names, each of which must exist.
fn shard_files(index_path: &Path, part: &str) -> Result<Vec<PathBuf>> {
    let index = JsonObject::from_file(index_path)?;
    let Some(Value::Object(map)) = index.map.get("weight_map") else {
        return Err(index.error(
            "weight_map",
            "missing or not an object of tensor -> file".into(),
        ));
    };
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\'))
            .ok_or_else(|| {
                index.error(
                    "weight_map",
                    format!("`{tensor}`: expected a file name in the same folder, got {file}"),
                )
            })?;
        files.insert(file.to_string());
    }
    let dir = index_path.parent().unwrap_or(Path::new("."));
    files
        .into_iter()
        .map(|file| existing(dir, &file, part))
        .collect()
}
