//! `ClipTokenizer`: the byte-level BPE tokenizer of CLIP text encoders, read from the
//! `tokenizer/` folder of a diffusers pipeline (`vocab.json`, `merges.txt`,
//! `tokenizer_config.json`), giving the ids transformers' `CLIPTokenizer` gives.
//!
//! The reference is transformers 5 (the version diffusers 0.42 runs with), whose `CLIPTokenizer`
//! is built on the `tokenizers` library. For each prompt it:
//! 1. splits the raw text on the special tokens (`<|startoftext|>`, `<|endoftext|>`, the pad
//!    token, `added_tokens_decoder` entries), matched verbatim, leftmost and then longest first.
//!    SD 2.x tokenizers pad with `!`, so there every `!` of a prompt becomes the bare `!` token
//!    (id of `!`, not `!</w>`);
//! 2. normalises each other piece: Unicode NFC, every run of whitespace to one space, then
//!    lower-casing character by character (so a final `Σ` becomes `σ`, not `ς`), and splits it
//!    again on the special tokens marked `"normalized": true` (transformers 4 configs, as in the
//!    hub SD folders, mark `<|startoftext|>` so: `<|StartOfText|>` in a prompt is then that
//!    token). A token named twice (eos and unk are usually both `<|endoftext|>`) takes the flag
//!    of its last mention in the order bos, eos, unk, pad, `added_tokens_decoder`; a plain
//!    string is not normalised;
//! 3. pre-tokenises with CLIP's pattern
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (text between matches, i.e. spaces, is dropped), then splits each match again with the
//!    GPT-2 pattern of the byte-level step (this only splits a lower-cased `<|endoftext|>` that
//!    was not a special token into `<|`, `endoftext`, `|>`);
//! 4. maps each piece's UTF-8 bytes to the 256 printable characters of the byte-level alphabet
//!    and applies the BPE merges to it, `</w>` marking its last symbol: repeatedly the adjacent
//!    pair of lowest merge rank (leftmost on ties) is merged;
//! 5. adds `<|startoftext|>` and `<|endoftext|>` around the ids; for the text encoder the ids
//!    are cut to `model_max_length - 2` and padded to `model_max_length` with the pad token.
//!
//! transformers 4's Python `CLIPTokenizer` (ftfy or a BERT-style cleaner, no NFC for the
//! special-token matching) is not the reference; ftfy plays no part in transformers 5.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::json::{JsonObject, read_text};
use crate::error::{Error, Result};

/// CLIP's pre-tokenizer pattern (transformers' `CLIPTokenizer`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";
/// The byte-level pre-tokenizer's GPT-2 pattern, restricted to text without whitespace (its
/// optional leading space and whitespace alternatives cannot match there).
const PIECE_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";
/// Marks the last symbol of a word.
const END_OF_WORD: &str = "</w>";

/// A special token: matched verbatim in the raw text, or (`normalized`) in the normalised text.
#[derive(Debug, Clone)]
struct Special {
    content: String,
    id: u32,
    normalized: bool,
}

/// A piece of text between special tokens, or a special token.
enum Piece<'a> {
    Text(&'a str),
    Special(&'a Special),
}

/// The ids of a CLIP BPE vocabulary and its merges, and the special tokens of its config.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// id -> token.
    tokens: HashMap<u32, String>,
    /// (left id, right id) -> (rank, id of the merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
    /// Special tokens, longest first.
    specials: Vec<Special>,
    bos: u32,
    eos: u32,
    pad: u32,
    unk: u32,
    model_max_length: usize,
    clip_pattern: Regex,
    piece_pattern: Regex,
    whitespace: Regex,
}

impl ClipTokenizer {
    /// Reads `vocab.json`, `merges.txt` and `tokenizer_config.json` from a pipeline's
    /// `tokenizer/` folder.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let config_path = dir.join("tokenizer_config.json");
        Self::from_strs(
            &read_text(&vocab_path)?,
            &vocab_path.display().to_string(),
            &read_text(&merges_path)?,
            &merges_path.display().to_string(),
            &read_text(&config_path)?,
            &config_path.display().to_string(),
        )
    }

    /// Builds the tokenizer from the texts of `vocab.json`, `merges.txt` and
    /// `tokenizer_config.json`; the names are used in errors.
    ///
    /// Errors ([`Error::Config`]) name the file and the key, token or line: a vocabulary that is
    /// not an object of token -> id, a merges line that is not two tokens separated by one
    /// space, a merge whose parts or result are not in the vocabulary, a byte-level character
    /// missing from the vocabulary, a special token that is not in the vocabulary, or a
    /// missing or too small `model_max_length`.
    pub fn from_strs(
        vocab_text: &str,
        vocab_name: &str,
        merges_text: &str,
        merges_name: &str,
        config_text: &str,
        config_name: &str,
    ) -> Result<Self> {
        let vocab = parse_vocab(vocab_text, vocab_name)?;
        let byte_chars = byte_chars();
        for c in byte_chars {
            for token in [c.to_string(), format!("{c}{END_OF_WORD}")] {
                if !vocab.contains_key(&token) {
                    return Err(config_error(
                        vocab_name,
                        &token,
                        "a byte-level symbol is missing from the vocabulary".into(),
                    ));
                }
            }
        }

        let merges = parse_merges(merges_text, merges_name, &vocab, vocab_name)?;

        let config = JsonObject::parse(config_text, config_name)?;
        let special = |key: &str, default: &str| -> Result<Special> {
            let (content, normalized) = special_token(&config, key, default)?;
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
        // A token registered again (eos and unk are usually the same) takes the later flags.
        let mut specials: Vec<Special> = Vec::new();
        for token in [bos, eos, unk, pad]
            .into_iter()
            .chain(added_tokens(&config)?)
        {
            match specials.iter_mut().find(|s| s.content == token.content) {
                Some(known) => *known = token,
                None => specials.push(token),
            }
        }
        specials.sort_by(|a, b| b.content.len().cmp(&a.content.len()));

        Ok(Self {
            tokens: vocab.iter().map(|(t, &id)| (id, t.clone())).collect(),
            vocab,
            merges,
            byte_chars,
            specials,
            bos: bos_id,
            eos: eos_id,
            pad: pad_id,
            unk: unk_id,
            model_max_length,
            clip_pattern: Regex::new(CLIP_PATTERN).expect("valid pattern"),
            piece_pattern: Regex::new(PIECE_PATTERN).expect("valid pattern"),
            whitespace: Regex::new(r"\s+").expect("valid pattern"),
        })
    }

    /// The text encoder's sequence length (`model_max_length` of `tokenizer_config.json`, 77 in
    /// Stable Diffusion).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// The number of entries of `vocab.json`.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of `<|startoftext|>` (the config's `bos_token`).
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// The id of `<|endoftext|>` (the config's `eos_token`).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The id of the config's `pad_token` (`<|endoftext|>` in SD 1.x, `!` in SD 2.x).
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The tokens of `text`, without `<|startoftext|>`/`<|endoftext|>` around them
    /// (transformers' `tokenizer.tokenize(text)`).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        self.for_each_token(text, &mut |token, _| tokens.push(token.to_string()));
        tokens
    }

    /// The ids of `text` between `<|startoftext|>` and `<|endoftext|>`, neither cut nor padded
    /// (transformers' `tokenizer(text).input_ids`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos];
        self.for_each_token(text, &mut |_, id| ids.push(id));
        ids.push(self.eos);
        ids
    }

    /// The text encoder's input: the ids of `text` cut to `model_max_length - 2`, between
    /// `<|startoftext|>` and `<|endoftext|>`, padded with the pad token to `model_max_length`
    /// (transformers' `tokenizer(text, padding="max_length", max_length=model_max_length,
    /// truncation=True).input_ids`, as the Stable Diffusion pipelines call it).
    pub fn encode_padded(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode(text);
        if ids.len() > self.model_max_length {
            ids.truncate(self.model_max_length - 1);
            ids.push(self.eos);
        }
        ids.resize(self.model_max_length, self.pad);
        ids
    }

    /// Calls `f` with every token of `text` and its id, in order.
    fn for_each_token(&self, text: &str, f: &mut dyn FnMut(&str, u32)) {
        for piece in self.split(text, false) {
            match piece {
                Piece::Special(s) => f(&s.content, s.id),
                Piece::Text(raw) => {
                    let normal = self.normalize(raw);
                    for piece in self.split(&normal, true) {
                        match piece {
                            Piece::Special(s) => f(&s.content, s.id),
                            Piece::Text(text) => self.pre_tokenize(text, f),
                        }
                    }
                }
            }
        }
    }

    /// Splits `text` at the special tokens whose `normalized` flag is `normalized`: at each
    /// position the longest one starting there; empty text between tokens is left out.
    fn split<'a>(&'a self, text: &'a str, normalized: bool) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut at = 0;
        while at < text.len() {
            let found = self
                .specials
                .iter()
                .find(|s| s.normalized == normalized && text[at..].starts_with(s.content.as_str()));
            match found {
                Some(special) => {
                    if start < at {
                        pieces.push(Piece::Text(&text[start..at]));
                    }
                    pieces.push(Piece::Special(special));
                    at += special.content.len();
                    start = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    /// Step 2 of the module documentation: NFC, whitespace runs to one space, lower case.
    fn normalize(&self, text: &str) -> String {
        let composed: String = text.nfc().collect();
        let spaced = self.whitespace.replace_all(&composed, " ");
        spaced.chars().flat_map(char::to_lowercase).collect()
    }

    /// Steps 3 and 4 of the module documentation for normalised text without special tokens.
    fn pre_tokenize(&self, text: &str, f: &mut dyn FnMut(&str, u32)) {
        for word in self.clip_pattern.find_iter(text) {
            for piece in self.piece_pattern.find_iter(word.as_str()) {
                let mapped: String = piece
                    .as_str()
                    .bytes()
                    .map(|b| self.byte_chars[usize::from(b)])
                    .collect();
                self.bpe(&mapped, f);
            }
        }
    }

    /// Applies the merges to one pre-tokenised, byte-mapped piece.
    fn bpe(&self, piece: &str, f: &mut dyn FnMut(&str, u32)) {
        let chars: Vec<char> = piece.chars().collect();
        let mut symbols: Vec<u32> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut symbol = c.to_string();
                if i + 1 == chars.len() {
                    symbol.push_str(END_OF_WORD);
                }
                self.vocab.get(&symbol).copied().unwrap_or(self.unk)
            })
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| {
                    self.merges
                        .get(&(pair[0], pair[1]))
                        .map(|&(rank, id)| (rank, i, id))
                })
                .min();
            let Some((_, i, id)) = best else { break };
            symbols[i] = id;
            symbols.remove(i + 1);
        }
        for id in symbols {
            f(self.token(id), id);
        }
    }

    /// The token of a vocabulary id (every id the merges produce is in the vocabulary).
    fn token(&self, id: u32) -> &str {
        self.tokens.get(&id).map_or("", String::as_str)
    }
}

fn config_error(source_name: &str, key: &str, message: String) -> Error {
    Error::Config {
        source_name: source_name.to_string(),
        key: key.to_string(),
        message,
    }
}

/// `vocab.json`: an object of token -> id.
fn parse_vocab(text: &str, name: &str) -> Result<HashMap<String, u32>> {
    let object = JsonObject::parse(text, name)?;
    object
        .map
        .iter()
        .map(|(token, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (token.clone(), id))
                .ok_or_else(|| object.error(token, format!("expected an id (u32), got {id}")))
        })
        .collect()
}

/// `merges.txt`: one merge per line in rank order, `left right` separated by one space; lines
/// starting with `#version` are skipped. A later duplicate of a merge overrides its rank.
fn parse_merges(
    text: &str,
    name: &str,
    vocab: &HashMap<String, u32>,
    vocab_name: &str,
) -> Result<HashMap<(u32, u32), (u32, u32)>> {
    let mut merges = HashMap::new();
    let mut rank = 0u32;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        let key = format!("line {}", index + 1);
        let (left, right) = line
            .split_once(' ')
            .filter(|(_, right)| !right.contains(' '))
            .ok_or_else(|| {
                config_error(
                    name,
                    &key,
                    format!("expected two tokens separated by one space, got {line:?}"),
                )
            })?;
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                config_error(name, &key, format!("`{token}` is not in {vocab_name}"))
            })
        };
        let merged = id(&format!("{left}{right}"))?;
        merges.insert((id(left)?, id(right)?), (rank, merged));
        rank += 1;
    }
    Ok(merges)
}

/// A special token of `tokenizer_config.json` and its `normalized` flag: a string (not
/// normalised), or an `AddedToken` object with a `content` string and an optional `normalized`
/// flag (transformers 4's format); `default` when absent (transformers' defaults).
fn special_token(config: &JsonObject, key: &str, default: &str) -> Result<(String, bool)> {
    let (content, normalized) = match config.map.get(key) {
        None => (default.to_string(), false),
        Some(Value::String(s)) => (s.clone(), false),
        Some(value @ Value::Object(_)) => added_token(value).ok_or_else(|| {
            config.error(
                key,
                format!("expected an AddedToken with a `content` string, got {value}"),
            )
        })?,
        Some(other) => {
            return Err(config.error(
                key,
                format!("expected a string or an AddedToken object, got {other}"),
            ));
        }
    };
    if content.is_empty() {
        return Err(config.error(key, "the token is empty".into()));
    }
    Ok((content, normalized))
}

/// The `content` and `normalized` flag (false when absent) of an `AddedToken` object.
fn added_token(value: &Value) -> Option<(String, bool)> {
    let content = value.get("content")?.as_str()?.to_string();
    let normalized = match value.get("normalized") {
        None => false,
        Some(flag) => flag.as_bool()?,
    };
    Some((content, normalized))
}

/// The `added_tokens_decoder` entries of `tokenizer_config.json` (id -> AddedToken), if any,
/// in id order.
fn added_tokens(config: &JsonObject) -> Result<Vec<Special>> {
    let key = "added_tokens_decoder";
    let Some(value) = config.map.get(key) else {
        return Ok(Vec::new());
    };
    let Value::Object(entries) = value else {
        return Err(config.error(key, format!("expected an object, got {value}")));
    };
    let mut tokens = entries
        .iter()
        .map(
            |(id, token)| match (id.parse::<u32>(), added_token(token)) {
                (Ok(id), Some((content, normalized))) if !content.is_empty() => Ok(Special {
                    content,
                    id,
                    normalized,
                }),
                _ => Err(config.error(
                    key,
                    format!(
                        "entry {id:?}: expected an id -> AddedToken with a non-empty `content`"
                    ),
                )),
            },
        )
        .collect::<Result<Vec<_>>>()?;
    tokens.sort_by_key(|t| t.id);
    Ok(tokens)
}

/// The byte-level alphabet: printable Latin-1 bytes map to themselves, the 68 others to
/// U+0100 onwards in byte order.
fn byte_chars() -> [char; 256] {
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
