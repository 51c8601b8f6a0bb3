//! Tests of checkpoint loading: shapes, leftovers, legacy names, dtypes, malformed files.

use super::*;
use safetensors::Dtype;
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
    let Err(Error::Checkpoint { message, .. }) = w.take("m.attentions.0.to_q.weight", &[2]) else {
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
