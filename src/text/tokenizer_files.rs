//! The files a [`ClipTokenizer`](super::ClipTokenizer) is read from: `vocab.json` +
//! `merges.txt` (the hub SD folders), or `tokenizer.json` (what transformers 5's
//! `save_pretrained` writes), and `tokenizer_config.json` for the special tokens and length.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config_json::JsonObject;
use crate::error::{Error, Result};

/// Marks the last symbol of a word.
pub(crate) const END_OF_WORD: &str = "</w>";

/// CLIP's pre-tokenizer pattern as transformers writes it into `tokenizer.json`.
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A special token: matched verbatim in the raw text, or (`normalized`) in the normalised text.
#[derive(Debug, Clone)]
pub(crate) struct Special {
    /// The token's text.
    pub content: String,
    /// Its id.
    pub id: u32,
    /// Whether it is matched after normalisation.
    pub normalized: bool,
}

/// Everything a tokenizer folder defines.
pub(crate) struct TokenizerData {
    /// token -> id.
    pub vocab: HashMap<String, u32>,
    /// (left id, right id) -> (rank, id of the merged symbol).
    pub merges: HashMap<(u32, u32), (u32, u32)>,
    /// The special tokens, each once, with the flags of its last mention.
    pub specials: Vec<Special>,
    /// The ids of the config's bos, eos, unk and pad tokens.
    pub bos: u32,
    /// See [`TokenizerData::bos`].
    pub eos: u32,
    /// See [`TokenizerData::bos`].
    pub unk: u32,
    /// See [`TokenizerData::bos`].
    pub pad: u32,
    /// `model_max_length` of the config.
    pub model_max_length: usize,
}

fn config_error(source_name: &str, key: &str, message: String) -> Error {
    Error::Config {
        source_name: source_name.to_string(),
        key: key.to_string(),
        message,
    }
}

/// From the texts of `vocab.json`, `merges.txt` and `tokenizer_config.json`.
pub(crate) fn from_vocab_and_merges(
    vocab_text: &str,
    vocab_name: &str,
    merges_text: &str,
    merges_name: &str,
    config: &JsonObject,
) -> Result<TokenizerData> {
    let vocab_json = JsonObject::parse(vocab_text, vocab_name)?;
    let vocab = parse_vocab(&vocab_json.map, vocab_name)?;
    // merges.txt: one merge per line in rank order, `left right` separated by one space; lines
    // starting with `#version` are skipped.
    let mut merges = Vec::new();
    for (index, line) in merges_text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        let key = format!("line {}", index + 1);
        match line.split_once(' ') {
            Some((left, right)) if !right.contains(' ') => {
                merges.push((key, left.to_string(), right.to_string()));
            }
            _ => {
                return Err(config_error(
                    merges_name,
                    &key,
                    format!("expected two tokens separated by one space, got {line:?}"),
                ));
            }
        }
    }
    let merges = rank_merges(&merges, &vocab, merges_name, vocab_name)?;
    build(vocab, merges, Vec::new(), vocab_name, config)
}

/// From the texts of `tokenizer.json` (a `tokenizers` BPE with CLIP's normaliser and
/// pre-tokenizer) and `tokenizer_config.json`.
pub(crate) fn from_tokenizer_json(
    json_text: &str,
    json_name: &str,
    config: &JsonObject,
) -> Result<TokenizerData> {
    let json = JsonObject::parse(json_text, json_name)?;
    let error = |key: &str, message: String| config_error(json_name, key, message);
    let types = |value: Option<&Value>, list: &str| -> Vec<String> {
        let items = value.and_then(|v| v.get(list)).and_then(Value::as_array);
        items
            .into_iter()
            .flatten()
            .map(|item| item["type"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let normalizer = json.map.get("normalizer");
    if types(normalizer, "normalizers") != ["NFC", "Replace", "Lowercase"] {
        return Err(error(
            "normalizer",
            "not CLIP's (expected a Sequence of NFC, Replace, Lowercase)".into(),
        ));
    }
    let pre_tokenizer = json.map.get("pre_tokenizer");
    let split_pattern = pre_tokenizer
        .and_then(|p| p["pretokenizers"][0]["pattern"]["Regex"].as_str())
        .unwrap_or("");
    if types(pre_tokenizer, "pretokenizers") != ["Split", "ByteLevel"]
        || split_pattern != CLIP_SPLIT_PATTERN
    {
        return Err(error(
            "pre_tokenizer",
            "not CLIP's (expected a Sequence of Split on CLIP's pattern, ByteLevel)".into(),
        ));
    }
    let model = json.required("model")?;
    let field = |name: &str| model.get(name).unwrap_or(&Value::Null);
    let prefix = field("continuing_subword_prefix");
    let bpe = field("type") == "BPE"
        && field("end_of_word_suffix") == END_OF_WORD
        && (prefix.is_null() || prefix == "")
        && field("dropout").is_null()
        && !field("byte_fallback").as_bool().unwrap_or(false)
        && !field("ignore_merges").as_bool().unwrap_or(false);
    if !bpe {
        return Err(error(
            "model",
            "not CLIP's BPE (expected type BPE, end_of_word_suffix </w>, no prefix, dropout, \
             byte_fallback or ignore_merges)"
                .into(),
        ));
    }
    let Value::Object(vocab_map) = field("vocab") else {
        return Err(error(
            "model.vocab",
            "expected an object of token -> id".into(),
        ));
    };
    let vocab = parse_vocab(vocab_map, json_name)?;
    let Value::Array(merge_values) = field("merges") else {
        return Err(error("model.merges", "expected a list".into()));
    };
    let mut merges = Vec::new();
    for (i, merge) in merge_values.iter().enumerate() {
        let key = format!("model.merges[{i}]");
        let pair = match merge {
            Value::String(s) => s.split_once(' ').filter(|(_, r)| !r.contains(' ')),
            Value::Array(pair) if pair.len() == 2 => pair[0].as_str().zip(pair[1].as_str()),
            _ => None,
        };
        let Some((left, right)) = pair else {
            return Err(error(
                &key,
                format!("expected \"left right\" or [left, right], got {merge}"),
            ));
        };
        merges.push((key, left.to_string(), right.to_string()));
    }
    let merges = rank_merges(&merges, &vocab, json_name, json_name)?;
    let mut added = Vec::new();
    if let Some(list) = json.map.get("added_tokens") {
        for (i, token) in list.as_array().into_iter().flatten().enumerate() {
            let entry_error =
                |message: String| error("added_tokens", format!("entry {i}: {message}"));
            let id = token["id"].as_u64().and_then(|id| u32::try_from(id).ok());
            let id = id.ok_or_else(|| entry_error(format!("expected a u32 `id`, got {token}")))?;
            let (content, normalized) = added_token(token).map_err(entry_error)?;
            added.push(Special {
                content,
                id,
                normalized,
            });
        }
    }
    build(vocab, merges, added, json_name, config)
}

/// An object of token -> id, which must hold every byte-level symbol with and without `</w>`.
fn parse_vocab(map: &Map<String, Value>, name: &str) -> Result<HashMap<String, u32>> {
    let vocab = map
        .iter()
        .map(|(token, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (token.clone(), id))
                .ok_or_else(|| config_error(name, token, format!("expected an id (u32), got {id}")))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    for c in byte_chars() {
        for token in [c.to_string(), format!("{c}{END_OF_WORD}")] {
            if !vocab.contains_key(&token) {
                return Err(config_error(
                    name,
                    &token,
                    "a byte-level symbol is missing from the vocabulary".into(),
                ));
            }
        }
    }
    Ok(vocab)
}

/// Ranks merges (their position; a later duplicate overrides), each of whose parts and result
/// must be in the vocabulary. `merges` holds (key for errors, left, right).
fn rank_merges(
    merges: &[(String, String, String)],
    vocab: &HashMap<String, u32>,
    name: &str,
    vocab_name: &str,
) -> Result<HashMap<(u32, u32), (u32, u32)>> {
    let mut ranked = HashMap::new();
    for (rank, (key, left, right)) in (0u32..).zip(merges) {
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| config_error(name, key, format!("`{token}` is not in {vocab_name}")))
        };
        let merged = id(&format!("{left}{right}"))?;
        ranked.insert((id(left)?, id(right)?), (rank, merged));
    }
    Ok(ranked)
}

/// Reads the special tokens and length from the config, and resolves
/// each special token's flags: mentions in the order bos, eos, unk, pad, `added` (the
/// `tokenizer.json` list), `added_tokens_decoder`, the last one winning.
fn build(
    vocab: HashMap<String, u32>,
    merges: HashMap<(u32, u32), (u32, u32)>,
    added: Vec<Special>,
    vocab_name: &str,
    config: &JsonObject,
) -> Result<TokenizerData> {
    let special = |key: &str, default: &str| -> Result<Special> {
        let (content, normalized) = special_token(config, key, default)?;
        let id = vocab
            .get(&content)
            .copied()
            .ok_or_else(|| config.error(key, format!("`{content}` is not in {vocab_name}")))?;
        Ok(Special {
            content,
            id,
            normalized,
        })
    };
    let bos = special("bos_token", "<|startoftext|>")?;
    let eos = special("eos_token", "<|endoftext|>")?;
    let unk = special("unk_token", "<|endoftext|>")?;
    let pad = special("pad_token", "<|endoftext|>")?;
    let model_max_length = config.required_usize("model_max_length")?;
    if model_max_length < 2 {
        return Err(config.error(
            "model_max_length",
            format!("{model_max_length} leaves no room for <|startoftext|> and <|endoftext|>"),
        ));
    }
    let (bos_id, eos_id, unk_id, pad_id) = (bos.id, eos.id, unk.id, pad.id);
    let mut specials: Vec<Special> = Vec::new();
    for token in [bos, eos, unk, pad]
        .into_iter()
        .chain(added)
        .chain(added_tokens_decoder(config)?)
    {
        match specials.iter_mut().find(|s| s.content == token.content) {
            Some(known) => *known = token,
            None => specials.push(token),
        }
    }
    Ok(TokenizerData {
        vocab,
        merges,
        specials,
        bos: bos_id,
        eos: eos_id,
        unk: unk_id,
        pad: pad_id,
        model_max_length,
    })
}

/// A special token of `tokenizer_config.json` and its `normalized` flag: a string (not
/// normalised), or an `AddedToken` object with a `content` string and an optional `normalized`
/// flag (transformers 4's format); `default` when absent (transformers' defaults).
fn special_token(config: &JsonObject, key: &str, default: &str) -> Result<(String, bool)> {
    match config.map.get(key) {
        None => Ok((default.to_string(), false)),
        Some(Value::String(s)) if s.is_empty() => {
            Err(config.error(key, "the token is empty".into()))
        }
        Some(Value::String(s)) => Ok((s.clone(), false)),
        Some(value @ Value::Object(_)) => {
            added_token(value).map_err(|message| config.error(key, message))
        }
        Some(other) => Err(config.error(
            key,
            format!("expected a string or an AddedToken object, got {other}"),
        )),
    }
}

/// The `content` and `normalized` flag (false when absent) of an `AddedToken` object; an empty
/// `content`, and `lstrip`, `rstrip` or `single_word` true (which CLIP tokenizers never set),
/// are refused.
fn added_token(value: &Value) -> std::result::Result<(String, bool), String> {
    let content = value.get("content").and_then(Value::as_str);
    let Some(content) = content.filter(|c| !c.is_empty()) else {
        return Err(format!(
            "expected an AddedToken with a non-empty `content` string, got {value}"
        ));
    };
    let flag = |name: &str| match value.get(name) {
        None => Ok(false),
        Some(flag) => flag
            .as_bool()
            .ok_or_else(|| format!("`{name}`: expected true or false, got {flag}")),
    };
    for name in ["lstrip", "rstrip", "single_word"] {
        if flag(name)? {
            return Err(format!(
                "`{content}`: `{name}` true is not supported (CLIP tokenizers leave it false)"
            ));
        }
    }
    Ok((content.to_string(), flag("normalized")?))
}

/// The `added_tokens_decoder` entries of `tokenizer_config.json` (id -> AddedToken), if any,
/// in id order.
fn added_tokens_decoder(config: &JsonObject) -> Result<Vec<Special>> {
    let key = "added_tokens_decoder";
    let Some(value) = config.map.get(key) else {
        return Ok(Vec::new());
    };
    let Value::Object(entries) = value else {
        return Err(config.error(key, format!("expected an object, got {value}")));
    };
    let mut tokens = entries
        .iter()
        .map(|(id, token)| {
            let entry_error =
                |message: String| config.error(key, format!("entry {id:?}: {message}"));
            let id = id
                .parse::<u32>()
                .map_err(|_| entry_error("the key is not a u32 id".into()))?;
            let (content, normalized) = added_token(token).map_err(entry_error)?;
            Ok(Special {
                content,
                id,
                normalized,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tokens.sort_by_key(|t| t.id);
    Ok(tokens)
}

/// The byte-level alphabet: printable Latin-1 bytes map to themselves, the 68 others to
/// U+0100 onwards in byte order.
pub(crate) fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    let mut chars = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        chars[usize::from(b)] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            // U+0100..U+0143 are all characters.
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    chars
}
