//! Conversion of safetensors tensor bytes to f32: the one implementation used for checkpoint
//! weights ([`super::Weights`]) and for tensors read as data ([`crate::io::read_tensors`]).

use safetensors::Dtype;

/// Dtypes a checkpoint's weights may have.
pub(crate) const WEIGHT_DTYPES: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::BF16];

/// Dtypes of tensors read as data (samples, timesteps, labels): integers too.
pub(crate) const DATA_DTYPES: &[Dtype] = &[
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::F64,
    Dtype::I64,
    Dtype::I32,
];

/// A tensor's little-endian `bytes` of `dtype` as f32, or `None` when `dtype` is not in
/// `accepted` (or not one of [`DATA_DTYPES`]). Values beyond f32's range become infinite;
/// callers refuse non-finite values.
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8], accepted: &[Dtype]) -> Option<Vec<f32>> {
    if !accepted.contains(&dtype) {
        return None;
    }
    let values = match dtype {
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
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(std::array::from_fn(|i| c[i])) as f32)
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(std::array::from_fn(|i| c[i])) as f32)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(values)
}
