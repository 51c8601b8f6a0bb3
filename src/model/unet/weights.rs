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

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest header accepted, as in the safetensors crate: a larger length field means a corrupt
/// (or hostile) file, and is refused before anything is allocated for it.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes of the little-endian u64 header length that starts every safetensors file.
const LEN_BYTES: usize = 8;

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
            let data = to_f32(file, stored_name, view.dtype(), view.data())?;
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

fn checkpoint(file: &str, tensor: &str, message: String) -> Error {
    Error::Checkpoint {
        file: file.to_string(),
        tensor: tensor.to_string(),
        message,
    }
}

fn truncated_prefix(file: &str, file_len: u64) -> Error {
    checkpoint(
        file,
        "(header)",
        format!(
            "truncated: the file has {file_len} bytes, fewer than the {LEN_BYTES}-byte header \
             length that starts a safetensors file"
        ),
    )
}

/// Checks the header length field against the size limit and the file's length.
fn check_header_length(file: &str, header_len: u64, file_len: u64) -> Result<()> {
    if header_len > MAX_HEADER_BYTES {
        return Err(checkpoint(
            file,
            "(header)",
            format!(
                "the header length field says {header_len} bytes, over the limit of \
                 {MAX_HEADER_BYTES}: not a safetensors file, or a corrupt one"
            ),
        ));
    }
    let available = file_len - LEN_BYTES as u64;
    if header_len > available {
        return Err(checkpoint(
            file,
            "(header)",
            format!(
                "truncated: the header length field says {header_len} bytes but only \
                 {available} follow it (the file has {file_len} bytes)"
            ),
        ));
    }
    Ok(())
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

/// Converts a tensor's little-endian bytes to f32.
fn to_f32(file: &str, tensor: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let data = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(checkpoint(
                file,
                tensor,
                format!("unsupported dtype {other} (supported: F32, F16, BF16)"),
            ));
        }
    };
    Ok(data)
}

/// A clear message for a safetensors parse error. For offset and size errors, which the
/// safetensors crate reports without (or with only one) tensor name, the header is re-read to
/// name the tensor and the numbers involved.
fn describe_error(file: &str, bytes: &[u8], error: SafeTensorError) -> Error {
    let header = || {
        let len = bytes
            .first_chunk::<LEN_BYTES>()
            .map(|p| u64::from_le_bytes(*p))
            .and_then(|n| usize::try_from(n).ok())?;
        bytes.get(LEN_BYTES..LEN_BYTES.checked_add(len)?)
    };
    let plain = |message: String| checkpoint(file, "(header)", message);
    match error {
        SafeTensorError::HeaderTooSmall => truncated_prefix(file, bytes.len() as u64),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            plain(format!("invalid header length ({error})"))
        }
        SafeTensorError::InvalidHeader(e) => plain(format!("the header is not UTF-8 text: {e}")),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            match header().map(serde_json::from_slice::<Value>) {
                Some(Ok(Value::Object(_))) | None => plain(format!(
                    "the header is JSON but not a valid safetensors header: {e}"
                )),
                Some(Ok(_)) => plain("the header is JSON but not an object".into()),
                Some(Err(_)) => plain(format!("the header is not JSON: {e}")),
            }
        }
        SafeTensorError::InvalidOffset(_)
        | SafeTensorError::TensorInvalidInfo
        | SafeTensorError::MetadataIncompleteBuffer
        | SafeTensorError::ValidationOverflow
        | SafeTensorError::MisalignedSlice => header()
            .and_then(|h| diagnose_layout(file, h, bytes.len() - LEN_BYTES - h.len()))
            .unwrap_or_else(|| match error {
                SafeTensorError::InvalidOffset(name) => checkpoint(
                    file,
                    &name,
                    "invalid data_offsets: tensors must follow each other without gaps or \
                     overlaps"
                        .into(),
                ),
                other => plain(other.to_string()),
            }),
        other => plain(other.to_string()),
    }
}

/// Walks the header's tensors in offset order as the safetensors crate does, and names the first
/// tensor whose byte range is wrong: overlapping, leaving a gap, ending before it starts,
/// disagreeing with its dtype and shape, or running past the end of the file. `data_len` is the
/// length of the data section after the header.
fn diagnose_layout(file: &str, header: &[u8], data_len: usize) -> Option<Error> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(header) else {
        return None;
    };
    let mut infos: Vec<(String, TensorInfo)> = map
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, value)| Some((name, serde_json::from_value::<TensorInfo>(value).ok()?)))
        .collect::<Option<_>>()?;
    infos.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));

    let mut end = 0usize;
    let mut previous: Option<&str> = None;
    for (name, info) in &infos {
        let (s, e) = info.data_offsets;
        let fail = |message: String| Some(checkpoint(file, name, message));
        if e < s {
            return fail(format!("data_offsets [{s}, {e}] end before they start"));
        }
        if s != end {
            let problem = match previous {
                Some(p) if s < end => format!("overlap `{p}`, which ends at {end}"),
                Some(p) => format!("leave a gap after `{p}`, which ends at {end}"),
                None => "leave a gap: the first tensor must start at 0".to_string(),
            };
            return fail(format!(
                "data_offsets [{s}, {e}] {problem}; tensors must be stored back to back"
            ));
        }
        let elements = info
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let bits = elements.and_then(|n| n.checked_mul(info.dtype.bitsize()));
        let Some(bits) = bits else {
            return fail(format!(
                "shape {:?} of {} overflows when computing its size",
                info.shape, info.dtype
            ));
        };
        if !bits.is_multiple_of(8) {
            return fail(format!(
                "shape {:?} of {} does not fill whole bytes",
                info.shape, info.dtype
            ));
        }
        if e - s != bits / 8 {
            return fail(format!(
                "dtype {} and shape {:?} need {} bytes, but data_offsets [{s}, {e}] hold {}",
                info.dtype,
                info.shape,
                bits / 8,
                e - s
            ));
        }
        if e > data_len {
            return fail(format!(
                "data_offsets [{s}, {e}] run past the end of the data section ({data_len} bytes \
                 after the header): the file is truncated"
            ));
        }
        end = e;
        previous = Some(name);
    }
    if end != data_len {
        return Some(checkpoint(
            file,
            "(header)",
            format!(
                "the tensors cover {end} bytes of data but {data_len} bytes follow the header; \
                 the file has trailing bytes or was cut short"
            ),
        ));
    }
    None
}

/// Levenshtein distance over bytes (names are ASCII in practice).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A safetensors file with the given tensors: (name, dtype, shape, bytes).
    fn file_with(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A file whose header is `header` (padded with spaces to a multiple of 8) followed by `data`.
    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut header = header.as_bytes().to_vec();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(data);
        bytes
    }

    #[track_caller]
    fn checkpoint_error<T: std::fmt::Debug>(result: Result<T>) -> (String, String) {
        match result {
            Err(Error::Checkpoint {
                file,
                tensor,
                message,
            }) => {
                assert_eq!(file, "w.safetensors");
                (tensor, message)
            }
            other => panic!("expected a Checkpoint error, got {other:?}"),
        }
    }

    #[test]
    fn take_checks_shapes_and_finish_reports_leftovers() {
        let bytes = file_with(&[
            (
                "a",
                Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1., 2., 3., 4., 5., 6.]),
            ),
            ("b", Dtype::F32, vec![2, 1, 1, 1], f32_bytes(&[7., 8.])),
            ("c", Dtype::F32, vec![1], f32_bytes(&[9.])),
        ]);
        let mut w = Weights::from_bytes(&bytes, "w.safetensors").unwrap();
        assert_eq!(w.names(), ["a", "b", "c"]);
        assert_eq!(w.shape("b"), Some(&[2, 1, 1, 1][..]));
        assert!(w.contains("a"));

        let Err(Error::Checkpoint {
            tensor, message, ..
        }) = w.take("a", &[3, 2])
        else {
            panic!("wrong shape accepted");
        };
        assert_eq!(tensor, "a");
        assert!(
            message.contains("expected shape [3, 2], found [2, 3]"),
            "{message}"
        );
        // A failed take leaves the tensor in place.
        assert_eq!(w.take("a", &[2, 3]).unwrap(), [1., 2., 3., 4., 5., 6.]);
        assert!(!w.contains("a"));
        let Err(Error::Checkpoint { message, .. }) = w.take("a", &[2, 3]) else {
            panic!("taken twice");
        };
        assert!(message.contains("already taken"), "{message}");
        // [O, I] accepts a stored [O, I, 1, 1].
        assert_eq!(w.take("b", &[2, 1]).unwrap(), [7., 8.]);

        let Err(Error::Checkpoint {
            tensor, message, ..
        }) = w.take("cc", &[1])
        else {
            panic!("missing tensor returned");
        };
        assert_eq!(tensor, "cc");
        assert!(
            message.contains("similar names in the file: `c`"),
            "{message}"
        );

        let Err(Error::Checkpoint {
            tensor, message, ..
        }) = Weights::from_bytes(&bytes, "w").unwrap().finish()
        else {
            panic!("finish with leftovers succeeded");
        };
        assert_eq!(tensor, "(file)");
        assert!(
            message.contains("3 tensors are not used by the config: `a`, `b`, `c`"),
            "{message}"
        );
        w.take("c", &[1]).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn shape_rules() {
        assert!(shapes_match(&[4, 3], &[4, 3, 1, 1]));
        assert!(shapes_match(&[4, 3, 1, 1], &[4, 3]));
        assert!(shapes_match(&[4, 3, 3, 3], &[4, 3, 3, 3]));
        assert!(!shapes_match(&[4, 3], &[4, 3, 3, 3]));
        assert!(!shapes_match(&[4, 3], &[3, 4, 1, 1]));
        assert!(!shapes_match(&[4, 3, 1, 1], &[4, 3, 1]));
        assert!(!shapes_match(&[12], &[4, 3]));
    }

    #[test]
    fn finish_lists_five_names_and_the_count() {
        let names: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        let tensors: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), Dtype::F32, vec![1], f32_bytes(&[0.5])))
            .collect();
        let w = Weights::from_bytes(&file_with(&tensors), "w.safetensors").unwrap();
        let (_, message) = checkpoint_error(w.finish());
        assert!(
            message.contains(
                "7 tensors are not used by the config: `t0`, `t1`, `t2`, `t3`, `t4`, and 2 more"
            ),
            "{message}"
        );
    }

    #[test]
    fn legacy_attention_names() {
        assert_eq!(
            modern_attention_name("mid_block.attentions.0.query.weight").as_deref(),
            Some("mid_block.attentions.0.to_q.weight")
        );
        assert_eq!(
            modern_attention_name("up_blocks.1.attentions.12.proj_attn.bias").as_deref(),
            Some("up_blocks.1.attentions.12.to_out.0.bias")
        );
        assert_eq!(
            modern_attention_name("down_blocks.1.attentions.0.key.weight").as_deref(),
            Some("down_blocks.1.attentions.0.to_k.weight")
        );
        assert_eq!(
            modern_attention_name("down_blocks.1.attentions.0.value.bias").as_deref(),
            Some("down_blocks.1.attentions.0.to_v.bias")
        );
        for name in [
            "mid_block.attentions.0.to_q.weight",
            "mid_block.attentions.x.query.weight",
            "mid_block.resnets.0.query.weight",
            "mid_block.attentions.0.query",
            "mid_block.attentions.0.query.weight.extra",
            "attentions.0.query",
            "query.weight",
        ] {
            assert_eq!(modern_attention_name(name), None, "{name}");
        }

        let bytes = file_with(&[
            (
                "m.attentions.0.query.weight",
                Dtype::F32,
                vec![1, 1],
                f32_bytes(&[1.]),
            ),
            (
                "m.attentions.0.proj_attn.bias",
                Dtype::F32,
                vec![1],
                f32_bytes(&[2.]),
            ),
        ]);
        let mut w = Weights::from_bytes(&bytes, "w.safetensors").unwrap();
        assert_eq!(
            w.names(),
            ["m.attentions.0.to_out.0.bias", "m.attentions.0.to_q.weight"]
        );
        let Err(Error::Checkpoint { message, .. }) = w.take("m.attentions.0.to_q.weight", &[2])
        else {
            panic!("wrong shape accepted");
        };
        assert!(
            message.contains("stored as `m.attentions.0.query.weight`"),
            "{message}"
        );
        assert_eq!(w.take("m.attentions.0.to_q.weight", &[1, 1]).unwrap(), [1.]);

        let both = file_with(&[
            (
                "m.attentions.0.query.weight",
                Dtype::F32,
                vec![1],
                f32_bytes(&[1.]),
            ),
            (
                "m.attentions.0.to_q.weight",
                Dtype::F32,
                vec![1],
                f32_bytes(&[1.]),
            ),
        ]);
        let (tensor, message) = checkpoint_error(Weights::from_bytes(&both, "w.safetensors"));
        assert_eq!(tensor, "m.attentions.0.to_q.weight");
        assert!(message.contains("stored twice"), "{message}");
        assert!(
            message.contains("`m.attentions.0.query.weight`"),
            "{message}"
        );
    }

    #[test]
    fn half_precision_converts() {
        let values = [0.5f32, -1.25, 3.0e-3, 1000.0];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let bytes = file_with(&[
            ("h", Dtype::F16, vec![4], f16),
            ("b", Dtype::BF16, vec![4], bf16),
        ]);
        let mut w = Weights::from_bytes(&bytes, "w.safetensors").unwrap();
        let h = w.take("h", &[4]).unwrap();
        let b = w.take("b", &[4]).unwrap();
        for i in 0..4 {
            assert_eq!(h[i], half::f16::from_f32(values[i]).to_f32());
            assert_eq!(b[i], half::bf16::from_f32(values[i]).to_f32());
            assert!((h[i] - values[i]).abs() <= values[i].abs() * 1e-3);
            assert!((b[i] - values[i]).abs() <= values[i].abs() * 8e-3);
        }
    }

    #[test]
    fn non_finite_values_and_other_dtypes_are_refused() {
        let bytes = file_with(&[(
            "x",
            Dtype::F32,
            vec![3],
            f32_bytes(&[1.0, f32::NAN, f32::INFINITY]),
        )]);
        let (tensor, message) = checkpoint_error(Weights::from_bytes(&bytes, "w.safetensors"));
        assert_eq!(tensor, "x");
        assert!(message.contains("value 1 (of 3) is NaN"), "{message}");

        let inf = half::f16::INFINITY.to_le_bytes().to_vec();
        let bytes = file_with(&[("y", Dtype::F16, vec![1], inf)]);
        let (tensor, message) = checkpoint_error(Weights::from_bytes(&bytes, "w.safetensors"));
        assert_eq!(tensor, "y");
        assert!(message.contains("value 0 (of 1) is inf"), "{message}");

        let bytes = file_with(&[("z", Dtype::F64, vec![1], 1.0f64.to_le_bytes().to_vec())]);
        let (tensor, message) = checkpoint_error(Weights::from_bytes(&bytes, "w.safetensors"));
        assert_eq!(tensor, "z");
        assert!(message.contains("unsupported dtype F64"), "{message}");
    }

    #[test]
    fn malformed_files() {
        let good = file_with(&[
            ("a", Dtype::F32, vec![2], f32_bytes(&[1., 2.])),
            ("b", Dtype::F32, vec![2], f32_bytes(&[3., 4.])),
        ]);
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (good[..5].to_vec(), "(header)", "fewer than the 8-byte"),
            (good[..20].to_vec(), "(header)", "truncated"),
            (good[..good.len() - 1].to_vec(), "b", "run past the end"),
            (
                [good.clone(), vec![0]].concat(),
                "(header)",
                "trailing bytes",
            ),
            (
                [(5u64 << 30).to_le_bytes().to_vec(), vec![b'{'; 16]].concat(),
                "(header)",
                "over the limit",
            ),
            (raw_file("{\"a\": \u{7f}", &[]), "(header)", "not JSON"),
            (
                [8u64.to_le_bytes().to_vec(), vec![0xff; 8]].concat(),
                "(header)",
                "not UTF-8",
            ),
            (raw_file("[1, 2]", &[]), "(header)", "not an object"),
            (
                raw_file(
                    r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                "(header)",
                "not a valid safetensors header",
            ),
            (
                raw_file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &[0; 12],
                ),
                "b",
                "overlap `a`, which ends at 8",
            ),
            (
                raw_file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &[0; 12],
                ),
                "a",
                "leave a gap",
            ),
            (
                raw_file(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "a",
                "need 12 bytes, but data_offsets [0, 8] hold 8",
            ),
            (
                raw_file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                    &[0; 8],
                ),
                "a",
                "end before they start",
            ),
        ];
        for (bytes, tensor, part) in cases {
            let (t, message) = checkpoint_error(Weights::from_bytes(&bytes, "w.safetensors"));
            assert_eq!(t, tensor, "{message}");
            assert!(message.contains(part), "`{message}` lacks `{part}`");
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("a.to_q.weight", "a.to_k.weight"), 1);
    }
}
