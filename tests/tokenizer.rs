//! `ClipTokenizer` against the ids transformers' `CLIPTokenizer` gave for the tricky prompts of
//! tests/fixtures/sd/tokens.json (tools/fixtures/make_sd_refs.py), and its typed errors.

use std::fs;
use std::path::{Path, PathBuf};

use diffusion_wgpu::{ClipTokenizer, Error};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn tokenizer(variant: &str) -> ClipTokenizer {
    ClipTokenizer::from_folder(&fixtures().join(format!("{variant}_tiny/tokenizer")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The rows of tokens.json for one tokenizer.
fn rows(variant: &str) -> Vec<Value> {
    let text = fs::read_to_string(fixtures().join("tokens.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[variant].as_array().unwrap().clone()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn check_all_prompts(variant: &str) {
    check_prompts(&tokenizer(variant), variant);
}

/// `tok` against the rows of tokens.json under `key`.
fn check_prompts(tok: &ClipTokenizer, key: &str) {
    let rows = rows(key);
    assert!(rows.len() >= 26, "{key}: {} prompts", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let prompt = row["prompt"].as_str().unwrap();
        let tokens = tok.tokenize(prompt);
        let ids_found = tok.encode(prompt);
        let padded = tok.encode_padded(prompt);
        if tokens != strings(&row["tokens"]) {
            failures.push(format!(
                "{name}: tokens\n  got      {tokens:?}\n  expected {:?}",
                strings(&row["tokens"])
            ));
        }
        if ids_found != ids(&row["ids"]) {
            failures.push(format!("{name}: ids {ids_found:?}"));
        }
        if padded != ids(&row["input_ids"]) {
            failures.push(format!("{name}: input_ids {padded:?}"));
        }
        assert_eq!(padded.len(), 77, "{name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sd1_tokenizer_matches_transformers_on_every_prompt() {
    check_all_prompts("sd1");
}

#[test]
fn sd2_tokenizer_matches_transformers_on_every_prompt() {
    check_all_prompts("sd2");
}

/// 200 random prompts drawn from tricky pieces (tools/fixtures/make_sd_refs.py, RANDOM_ALPHABET).
#[test]
fn random_prompts_match_transformers() {
    for variant in ["sd1", "sd2"] {
        check_prompts(&tokenizer(variant), &format!("{variant}_random"));
    }
}

/// The folders transformers 5's `save_pretrained` writes (`tokenizer.json`, no vocab.json /
/// merges.txt) give the same ids.
#[test]
fn tokenizer_json_folders_match_transformers() {
    for variant in ["sd1", "sd2"] {
        let dir = fixtures().join(format!("tokenizer_json/{variant}"));
        assert!(!dir.join("vocab.json").exists());
        let tok = ClipTokenizer::from_folder(&dir).unwrap_or_else(|e| panic!("{e}"));
        check_prompts(&tok, variant);
        check_prompts(&tok, &format!("{variant}_random"));
    }
}

/// `tokenizer.json` describing anything but CLIP's tokenizer is refused, naming the field.
#[test]
fn foreign_tokenizer_json_is_refused() {
    let dir = fixtures().join("tokenizer_json/sd1");
    let json: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let config = fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    let edits: &[(&str, &str, Value)] = &[
        (
            "normalizer",
            "/normalizer/normalizers/0/type",
            "NFKC".into(),
        ),
        (
            "pre_tokenizer",
            "/pre_tokenizer/pretokenizers/0/pattern/Regex",
            r"\w+".into(),
        ),
        ("model", "/model/type", "WordPiece".into()),
        ("model", "/model/end_of_word_suffix", Value::Null),
        ("model", "/model/dropout", 0.1.into()),
        ("model.merges[0]", "/model/merges/0", "i n x".into()),
        (
            "model.merges[1]",
            "/model/merges/1",
            serde_json::json!(["Q", "Z"]),
        ),
        ("added_tokens", "/added_tokens/0/id", "x".into()),
    ];
    for (key, pointer, value) in edits {
        let mut broken = json.clone();
        *broken.pointer_mut(pointer).unwrap() = value.clone();
        let result = ClipTokenizer::from_tokenizer_json_str(
            &broken.to_string(),
            "t.json",
            &config,
            "c.json",
        );
        match result {
            Err(Error::Config {
                source_name,
                key: k,
                ..
            }) => assert_eq!((source_name.as_str(), k.as_str()), ("t.json", *key)),
            other => panic!("{pointer}: expected a Config error for `{key}`, got {other:?}"),
        }
    }
}

/// transformers 4's tokenizer_config.json format of the hub SD folders: `<|startoftext|>` (and
/// in SD 2.x `<|endoftext|>`) are matched after normalisation.
#[test]
fn hub_format_configs_match_transformers_on_every_prompt() {
    for variant in ["sd1", "sd2"] {
        let folder = fixtures().join(format!("{variant}_tiny/tokenizer"));
        let config_path = fixtures().join(format!("hub_tokenizer_config/{variant}.json"));
        let read = |path: &Path| fs::read_to_string(path).unwrap();
        let tok = ClipTokenizer::from_strs(
            &read(&folder.join("vocab.json")),
            "vocab.json",
            &read(&folder.join("merges.txt")),
            "merges.txt",
            &read(&config_path),
            "tokenizer_config.json",
        )
        .unwrap();
        check_prompts(&tok, &format!("{variant}_hub"));
        // The case that differs from the plain-string config.
        let tokens = tok.tokenize("<|StartOfText|>");
        assert_eq!(tokens, ["<|startoftext|>"], "{variant}");
        assert_ne!(tokenizer(variant).tokenize("<|StartOfText|>"), tokens);
    }
}

#[test]
fn special_token_ids_and_lengths_come_from_the_folder() {
    let sd1 = tokenizer("sd1");
    let sd2 = tokenizer("sd2");
    for tok in [&sd1, &sd2] {
        assert_eq!(tok.model_max_length(), 77);
        assert_eq!(tok.vocab_size(), 907);
        assert_eq!(tok.bos_id(), 905);
        assert_eq!(tok.eos_id(), 906);
    }
    assert_eq!(sd1.pad_id(), 906);
    // SD 2.x pads with "!", the first byte-level symbol.
    assert_eq!(sd2.pad_id(), 0);
    assert_eq!(sd1.encode(""), [905, 906]);
    let mut empty = vec![905, 906];
    empty.resize(77, 0);
    assert_eq!(sd2.encode_padded(""), empty);
    // Truncation keeps <|endoftext|> last.
    let long = "castle ".repeat(100);
    let padded = sd1.encode_padded(&long);
    assert_eq!(padded.len(), 77);
    assert_eq!(padded[76], 906);
    assert_eq!(padded[..76], sd1.encode(&long)[..76]);
}

/// A copy of the sd1 tokenizer folder with `file` replaced by `contents`.
fn broken_copy(name: &str, file: &str, contents: &str) -> TempDir {
    let src = fixtures().join("sd1_tiny/tokenizer");
    let dir = std::env::temp_dir().join(format!("dw_tok_{}_{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    fs::write(dir.join(file), contents).unwrap();
    TempDir(dir)
}

/// A temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Asserts a Config error naming `file` and `key` whose message contains `part`.
#[track_caller]
fn assert_config_error(dir: &Path, file: &str, key: &str, part: &str) {
    match ClipTokenizer::from_folder(dir) {
        Err(Error::Config {
            source_name,
            key: k,
            message,
        }) => {
            assert!(source_name.ends_with(file), "{source_name}");
            assert_eq!(k, key, "{message}");
            assert!(message.contains(part), "`{message}` lacks `{part}`");
        }
        other => panic!("expected a Config error for {file} `{key}`, got {other:?}"),
    }
}

#[test]
fn broken_files_give_typed_errors() {
    let src = fixtures().join("sd1_tiny/tokenizer");
    let merges = fs::read_to_string(src.join("merges.txt")).unwrap();
    let config = fs::read_to_string(src.join("tokenizer_config.json")).unwrap();
    let vocab = fs::read_to_string(src.join("vocab.json")).unwrap();

    let dir = broken_copy("vocab_list", "vocab.json", "[1, 2]");
    assert_config_error(&dir, "vocab.json", "(file)", "JSON object");
    let dir = broken_copy("vocab_id", "vocab.json", &vocab.replace(": 905", ": -5"));
    assert_config_error(&dir, "vocab.json", "<|startoftext|>", "expected an id");
    let dir = broken_copy(
        "vocab_byte",
        "vocab.json",
        &vocab.replace("\"a</w>\"", "\"zz\""),
    );
    assert_config_error(&dir, "vocab.json", "a</w>", "byte-level symbol");

    let dir = broken_copy("merges_blank", "merges.txt", &format!("{merges}\n"));
    assert_config_error(&dir, "merges.txt", "line 395", "two tokens");
    let dir = broken_copy(
        "merges_three",
        "merges.txt",
        &merges.replacen("i n", "i n x", 1),
    );
    assert_config_error(&dir, "merges.txt", "line 2", "\"i n x\"");
    let dir = broken_copy(
        "merges_oov",
        "merges.txt",
        &merges.replacen("i n", "Q Z", 1),
    );
    assert_config_error(&dir, "merges.txt", "line 2", "`QZ` is not in");

    let dir = broken_copy(
        "config_len",
        "tokenizer_config.json",
        &config.replace("\"model_max_length\": 77,", ""),
    );
    assert_config_error(&dir, "tokenizer_config.json", "model_max_length", "missing");
    let dir = broken_copy(
        "config_len1",
        "tokenizer_config.json",
        &config.replace("\"model_max_length\": 77", "\"model_max_length\": 1"),
    );
    assert_config_error(&dir, "tokenizer_config.json", "model_max_length", "no room");
    let dir = broken_copy(
        "config_pad",
        "tokenizer_config.json",
        &config.replace(
            "\"pad_token\": \"<|endoftext|>\"",
            "\"pad_token\": \"<pad>\"",
        ),
    );
    assert_config_error(
        &dir,
        "tokenizer_config.json",
        "pad_token",
        "`<pad>` is not in",
    );
    let dir = broken_copy(
        "config_pad_type",
        "tokenizer_config.json",
        &config.replace("\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": 3"),
    );
    assert_config_error(&dir, "tokenizer_config.json", "pad_token", "AddedToken");

    let dir = broken_copy(
        "config_lstrip",
        "tokenizer_config.json",
        &config.replace(
            "\"pad_token\": \"<|endoftext|>\"",
            "\"pad_token\": {\"content\": \"<|endoftext|>\", \"lstrip\": true}",
        ),
    );
    assert_config_error(&dir, "tokenizer_config.json", "pad_token", "`lstrip` true");
    let dir = broken_copy(
        "config_decoder",
        "tokenizer_config.json",
        &config.replace(
            "\"model_max_length\"",
            "\"added_tokens_decoder\": {\"x\": {\"content\": \"!\"}}, \"model_max_length\"",
        ),
    );
    assert_config_error(
        &dir,
        "tokenizer_config.json",
        "added_tokens_decoder",
        "u32 id",
    );
    let dir = broken_copy(
        "config_pad_empty",
        "tokenizer_config.json",
        &config.replace(
            "\"pad_token\": \"<|endoftext|>\"",
            "\"pad_token\": {\"content\": \"\"}",
        ),
    );
    assert_config_error(&dir, "tokenizer_config.json", "pad_token", "empty");

    fs::remove_file(dir.join("merges.txt")).unwrap();
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("merges.txt")),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn older_config_formats_are_read() {
    // transformers 4 wrote special tokens as AddedToken objects, sometimes with an
    // added_tokens_decoder; SD 2.x's pad token "!" is then an added token as well.
    let config = r#"{
        "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": false},
        "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>"},
        "unk_token": {"content": "<|endoftext|>"},
        "pad_token": "!",
        "added_tokens_decoder": {"0": {"content": "!", "special": true}},
        "model_max_length": 77,
        "do_lower_case": true
    }"#;
    let dir = broken_copy("config_old", "tokenizer_config.json", config);
    let old = ClipTokenizer::from_folder(&dir).unwrap();
    let sd2 = tokenizer("sd2");
    for row in rows("sd2") {
        let prompt = row["prompt"].as_str().unwrap();
        assert_eq!(
            old.encode_padded(prompt),
            sd2.encode_padded(prompt),
            "{prompt}"
        );
    }
}

/// An I64 array of a reference file, as u32.
fn ids_array(file: &str, name: &str) -> Vec<u32> {
    let bytes = fs::read(fixtures().join(file)).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name}");
    view.data()
        .chunks_exact(8)
        .map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
        .collect()
}

/// The ids the per-part and pipeline references were made from are the tokenizer's.
#[test]
fn reference_inputs_are_the_tokenizer_ids() {
    let prompts = |names: &[&str], variant: &str| -> Vec<u32> {
        let rows = rows(variant);
        let tok = tokenizer(variant);
        names
            .iter()
            .flat_map(|name| {
                let row = rows.iter().find(|r| r["name"] == *name).unwrap();
                tok.encode_padded(row["prompt"].as_str().unwrap())
            })
            .collect()
    };
    for variant in ["sd1", "sd2"] {
        let file = format!("{variant}_refs.safetensors");
        assert_eq!(
            ids_array(&file, "text.input_ids"),
            prompts(&["plain", "empty", "long"], variant)
        );
        assert_eq!(
            ids_array(&file, "pipe.input_ids"),
            prompts(&["pipe_negative", "pipe_prompt"], variant)
        );
    }
}

/// A 200,000-letter word is one BPE piece: the merges take O(n log n), and the tokens spell it.
#[test]
fn very_long_words_are_tokenized_quickly() {
    let tok = tokenizer("sd1");
    let word = "thecastle".repeat(20_000);
    let start = std::time::Instant::now();
    let tokens = tok.tokenize(&word);
    let elapsed = start.elapsed();
    assert!(elapsed.as_secs() < 10, "{elapsed:?}");
    assert!(tokens.len() > 1000 && tokens.len() < word.len());
    let spelled: String = tokens.concat();
    assert_eq!(spelled, format!("{word}</w>"));
    assert_eq!(tok.encode_padded(&word).len(), 77);
}
