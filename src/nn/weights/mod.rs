//! `Weights`: a safetensors checkpoint read into f32, with errors that name the file and tensor.
//!
//! The whole file is read into memory and every tensor converted to f32 up front (F32, F16 and
//! BF16 are accepted), so NaN or infinite values are caught when the file is loaded. The graph
//! builder then [`take`](Weights::take)s each tensor it needs with the shape it expects, and
//! [`finish`](Weights::finish) reports any tensor nobody took: a checkpoint that does not match
//! its config fails loudly instead of running with half its weights.
//!
//! Old diffusers checkpoints name the attention projections `query` / `key` / `value` /
//! `proj_attn`; they are renamed to today's `to_q` / `to_k` / `to_v` / `to_out.0` on load.

mod dtype;
mod format;
#[cfg(test)]
mod tests;

pub(crate) use dtype::{DATA_DTYPES, WEIGHT_DTYPES, to_f32};

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use safetensors::SafeTensors;

use crate::error::{Error, Result};
use format::{
    LEN_BYTES, check_header_length, checkpoint, describe_error, edit_distance, truncated_prefix,
};

/// The attention projections' legacy names and today's.
const LEGACY_ATTENTION_NAMES: &[(&str, &str)] = &[
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

/// One tensor, converted to f32.
#[derive(Debug)]
struct Stored {
    shape: Vec<usize>,
    data: Vec<f32>,
    /// The name in the file, when it was renamed from a legacy attention name.
    legacy_name: Option<String>,
}

/// The tensors of a safetensors checkpoint, converted to f32 and keyed by (modern) name.
pub struct Weights {
    file: String,
    tensors: HashMap<String, Stored>,
    taken: HashSet<String>,
}

impl std::fmt::Debug for Weights {
    /// The file and the tensor counts (not the values).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("file", &self.file)
            .field("remaining", &self.tensors.len())
            .field("taken", &self.taken.len())
            .finish()
    }
}

impl Weights {
    /// Reads a safetensors file. The header length is checked against the file size before the
    /// file is read, so a corrupt length cannot trigger a huge allocation.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file_name = path.display().to_string();
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_error)?;
        let file_len = file.metadata().map_err(io_error)?.len();
        if file_len < LEN_BYTES as u64 {
            return Err(truncated_prefix(&file_name, file_len));
        }
        let mut prefix = [0u8; LEN_BYTES];
        file.read_exact(&mut prefix).map_err(io_error)?;
        check_header_length(&file_name, u64::from_le_bytes(prefix), file_len)?;

        let capacity = usize::try_from(file_len).map_err(|_| {
            checkpoint(
                &file_name,
                "(file)",
                format!("{file_len} bytes do not fit in this machine's memory"),
            )
        })?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(capacity).map_err(|_| {
            checkpoint(
                &file_name,
                "(file)",
                format!("cannot allocate {file_len} bytes to read the file"),
            )
        })?;
        bytes.extend_from_slice(&prefix);
        file.read_to_end(&mut bytes).map_err(io_error)?;
        Self::from_bytes(&bytes, &file_name)
    }

    /// Reads the shards of one checkpoint (or its one file) as one set of tensors; a name in
    /// two shards is an error naming both files.
    pub fn from_files(paths: &[std::path::PathBuf]) -> Result<Self> {
        let mut files = paths.iter().map(|path| Self::from_file(path));
        let mut merged = match files.next() {
            Some(first) => first?,
            None => {
                return Err(checkpoint(
                    "(no files)",
                    "(file)",
                    "no safetensors file given".into(),
                ));
            }
        };
        for shard in files {
            let shard = shard?;
            for (name, stored) in shard.tensors {
                if merged.tensors.contains_key(&name) {
                    let message = format!("also stored in {}", merged.file);
                    return Err(checkpoint(&shard.file, &name, message));
                }
                merged.tensors.insert(name, stored);
            }
        }
        Ok(merged)
    }

    /// Parses the bytes of a safetensors file; `file` names it in errors.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        let file_len = bytes.len() as u64;
        let Some(prefix) = bytes.first_chunk::<LEN_BYTES>() else {
            return Err(truncated_prefix(file, file_len));
        };
        let header_len = u64::from_le_bytes(*prefix);
        check_header_length(file, header_len, file_len)?;

        let parsed = SafeTensors::deserialize(bytes).map_err(|e| describe_error(file, bytes, e))?;
        let mut views: Vec<_> = parsed.iter().collect();
        views.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let mut tensors: HashMap<String, Stored> = HashMap::with_capacity(views.len());
        for (stored_name, view) in views {
            let data = to_f32(view.dtype(), view.data(), WEIGHT_DTYPES).ok_or_else(|| {
                checkpoint(
                    file,
                    stored_name,
                    format!(
                        "unsupported dtype {} (supported: F32, F16, BF16)",
                        view.dtype()
                    ),
                )
            })?;
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(checkpoint(
                    file,
                    stored_name,
                    format!(
                        "value {i} (of {}) is {}; expected finite values",
                        data.len(),
                        data[i]
                    ),
                ));
            }
            let (name, legacy_name) = match modern_attention_name(stored_name) {
                Some(modern) => (modern, Some(stored_name.to_string())),
                None => (stored_name.to_string(), None),
            };
            let stored = Stored {
                shape: view.shape().to_vec(),
                data,
                legacy_name,
            };
            if let Some(previous) = tensors.insert(name.clone(), stored) {
                // Sorted order puts either style first; name both in the message.
                let other = previous.legacy_name.unwrap_or_else(|| name.clone());
                return Err(checkpoint(
                    file,
                    &name,
                    format!(
                        "stored twice, as `{other}` and as `{stored_name}` (the legacy attention \
                         names query/key/value/proj_attn and to_q/to_k/to_v/to_out.0 must not \
                         both be present)"
                    ),
                ));
            }
        }
        Ok(Self {
            file: file.to_string(),
            tensors,
            taken: HashSet::new(),
        })
    }

    /// Removes and returns the tensor `name` with exactly `shape` (a `[O, I]` request also
    /// accepts a stored `[O, I, 1, 1]` and vice versa); errors name the file and tensor: missing
    /// (listing a few similar names if any), or wrong shape (expected vs found).
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(stored) = self.tensors.remove(name) else {
            return Err(self.missing(name));
        };
        if !shapes_match(shape, &stored.shape) {
            let stored_as = stored
                .legacy_name
                .as_ref()
                .map(|n| format!(" (stored as `{n}`)"))
                .unwrap_or_default();
            let error = checkpoint(
                &self.file,
                name,
                format!(
                    "expected shape {shape:?}, found {:?}{stored_as}",
                    stored.shape
                ),
            );
            self.tensors.insert(name.to_string(), stored);
            return Err(error);
        }
        self.taken.insert(name.to_string());
        Ok(stored.data)
    }

    /// Whether a tensor is present (and not yet taken).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor not yet taken.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// The names of the tensors not yet taken, sorted (legacy attention names already renamed).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The file name used in errors.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Errors if any tensor was never taken ("not used by the config: ..." listing up to 5 names
    /// and the count), so a config that does not match the weights is caught.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let names = self.names();
        let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
        let more = if names.len() > shown.len() {
            format!(", and {} more", names.len() - shown.len())
        } else {
            String::new()
        };
        Err(checkpoint(
            &self.file,
            "(file)",
            format!(
                "{} tensor{} not used by the config: {}{more}; the config.json does not match \
                 this checkpoint",
                names.len(),
                if names.len() == 1 { " is" } else { "s are" },
                shown.join(", "),
            ),
        ))
    }

    /// The error for a tensor that is not there: already taken, or missing with near names.
    fn missing(&self, name: &str) -> Error {
        if self.taken.contains(name) {
            return checkpoint(
                &self.file,
                name,
                "was already taken (each tensor can be taken once)".into(),
            );
        }
        let limit = (name.len() / 5).max(3);
        let mut near: Vec<(usize, &str)> = self
            .tensors
            .keys()
            .chain(self.taken.iter())
            .map(|other| (edit_distance(name, other), other.as_str()))
            .filter(|&(d, _)| d <= limit)
            .collect();
        near.sort_unstable();
        let message = if near.is_empty() {
            format!(
                "missing (the file has {} tensors, none with a similar name); the config.json \
                 does not match this checkpoint",
                self.tensors.len() + self.taken.len()
            )
        } else {
            let names: Vec<String> = near.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
            format!("missing; similar names in the file: {}", names.join(", "))
        };
        checkpoint(&self.file, name, message)
    }
}

/// Whether a stored shape satisfies a request: equal, or `[O, I]` vs `[O, I, 1, 1]` either way.
fn shapes_match(requested: &[usize], stored: &[usize]) -> bool {
    match (requested, stored) {
        ([o, i], [so, si, 1, 1]) | ([o, i, 1, 1], [so, si]) => o == so && i == si,
        _ => requested == stored,
    }
}

/// Today's name for a legacy attention tensor name (`....attentions.N.query.weight` ->
/// `....attentions.N.to_q.weight`), or `None` when the name is not a legacy one.
fn modern_attention_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    if n < 4 {
        return None;
    }
    let (attentions, index, component) = (parts[n - 4], parts[n - 3], parts[n - 2]);
    if attentions != "attentions" || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let &(_, modern) = LEGACY_ATTENTION_NAMES
        .iter()
        .find(|(legacy, _)| *legacy == component)?;
    let mut renamed: Vec<&str> = parts[..n - 2].to_vec();
    renamed.push(modern);
    renamed.push(parts[n - 1]);
    Some(renamed.join("."))
}
