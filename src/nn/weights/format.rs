//! The safetensors file format's checks: the header length, and clear messages for the
//! errors the safetensors crate reports, naming the file, the tensor and the numbers.

use safetensors::SafeTensorError;
use safetensors::tensor::TensorInfo;
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest header accepted, as in the safetensors crate: a larger length field means a corrupt
/// (or hostile) file, and is refused before anything is allocated for it.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes of the little-endian u64 header length that starts every safetensors file.
pub(super) const LEN_BYTES: usize = 8;

pub(super) fn checkpoint(file: &str, tensor: &str, message: String) -> Error {
    Error::Checkpoint {
        file: file.to_string(),
        tensor: tensor.to_string(),
        message,
    }
}

pub(super) fn truncated_prefix(file: &str, file_len: u64) -> Error {
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
pub(super) fn check_header_length(file: &str, header_len: u64, file_len: u64) -> Result<()> {
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

/// A clear message for a safetensors parse error. For offset and size errors, which the
/// safetensors crate reports without (or with only one) tensor name, the header is re-read to
/// name the tensor and the numbers involved.
pub(super) fn describe_error(file: &str, bytes: &[u8], error: SafeTensorError) -> Error {
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
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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
