//! `ClipTokenizer`: the byte-level BPE tokenizer of CLIP text encoders, read from the
//! `tokenizer/` folder of a diffusers pipeline (`vocab.json` + `merges.txt`, or
//! `tokenizer.json`, and `tokenizer_config.json`), giving the ids transformers' `CLIPTokenizer`
//! gives.
//!
//! The reference is transformers 5 (the version diffusers 0.42 runs with), whose `CLIPTokenizer`
//! is built on the `tokenizers` library. For each prompt it:
//! 1. splits the raw text on the special tokens (`<|startoftext|>`, `<|endoftext|>`, the pad
//!    token, `tokenizer.json`'s `added_tokens`, `added_tokens_decoder` entries), matched verbatim, leftmost and then longest first.
//!    SD 2.x tokenizers pad with `!`, so there every `!` of a prompt becomes the bare `!` token
//!    (id of `!`, not `!</w>`);
//! 2. normalises each other piece: Unicode NFC, every run of whitespace to one space, then
//!    lower-casing character by character (so a final `Σ` becomes `σ`, not `ς`), and splits it
//!    again on the special tokens marked `"normalized": true` (transformers 4 configs, as in the
//!    hub SD folders, mark `<|startoftext|>` so: `<|StartOfText|>` in a prompt is then that
//!    token). A token named twice (eos and unk are usually both `<|endoftext|>`) takes the flag
//!    of its last mention in the order bos, eos, unk, pad, `added_tokens`,
//!    `added_tokens_decoder`; a plain
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::tokenizer_files::{
    END_OF_WORD, Special, TokenizerData, byte_chars, from_tokenizer_json, from_vocab_and_merges,
};
use crate::config_json::{JsonObject, read_text};
use crate::error::Result;

/// CLIP's pre-tokenizer pattern (transformers' `CLIPTokenizer`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";
/// The byte-level pre-tokenizer's GPT-2 pattern, restricted to text without whitespace (its
/// optional leading space and whitespace alternatives cannot match there).
const PIECE_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";

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
    /// Reads a pipeline's `tokenizer/` folder: `tokenizer_config.json` and either `vocab.json` +
    /// `merges.txt` (the hub SD folders; taken when present) or `tokenizer.json` (what
    /// transformers 5 writes).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_text(&config_path)?;
        let config_name = config_path.display().to_string();
        let vocab_path = dir.join("vocab.json");
        let json_path = dir.join("tokenizer.json");
        if vocab_path.exists() || !json_path.exists() {
            let merges_path = dir.join("merges.txt");
            Self::from_strs(
                &read_text(&vocab_path)?,
                &vocab_path.display().to_string(),
                &read_text(&merges_path)?,
                &merges_path.display().to_string(),
                &config,
                &config_name,
            )
        } else {
            Self::from_tokenizer_json_str(
                &read_text(&json_path)?,
                &json_path.display().to_string(),
                &config,
                &config_name,
            )
        }
    }

    /// Builds the tokenizer from the texts of `vocab.json`, `merges.txt` and
    /// `tokenizer_config.json`; the names are used in errors.
    ///
    /// Errors ([`Error::Config`](crate::Error::Config)) name the file and the key, token or
    /// line: a vocabulary that is not an object of token -> id, a merges line that is not two
    /// tokens separated by one space (lines starting with `#version` are skipped), a merge whose
    /// parts or result are not in the vocabulary, a byte-level character missing from the
    /// vocabulary, a special token that is empty or not in the vocabulary, or a missing or too
    /// small `model_max_length`.
    pub fn from_strs(
        vocab_text: &str,
        vocab_name: &str,
        merges_text: &str,
        merges_name: &str,
        config_text: &str,
        config_name: &str,
    ) -> Result<Self> {
        let config = JsonObject::parse(config_text, config_name)?;
        let data =
            from_vocab_and_merges(vocab_text, vocab_name, merges_text, merges_name, &config)?;
        Ok(Self::from_data(data))
    }

    /// Builds the tokenizer from the texts of a `tokenizers` `tokenizer.json` and
    /// `tokenizer_config.json`; the names are used in errors.
    ///
    /// The `tokenizer.json` must describe CLIP's tokenizer (normaliser NFC, whitespace, lower
    /// case; CLIP's split pattern then byte-level pre-tokenisation; a BPE model with the `</w>`
    /// suffix), else an [`Error::Config`](crate::Error::Config) names the field; its
    /// `added_tokens` are special tokens. Otherwise the errors of [`ClipTokenizer::from_strs`].
    pub fn from_tokenizer_json_str(
        json_text: &str,
        json_name: &str,
        config_text: &str,
        config_name: &str,
    ) -> Result<Self> {
        let config = JsonObject::parse(config_text, config_name)?;
        Ok(Self::from_data(from_tokenizer_json(
            json_text, json_name, &config,
        )?))
    }

    fn from_data(data: TokenizerData) -> Self {
        let mut specials = data.specials;
        specials.sort_by_key(|s| Reverse(s.content.len()));
        Self {
            tokens: data.vocab.iter().map(|(t, &id)| (id, t.clone())).collect(),
            vocab: data.vocab,
            merges: data.merges,
            byte_chars: byte_chars(),
            specials,
            bos: data.bos,
            eos: data.eos,
            pad: data.pad,
            unk: data.unk,
            model_max_length: data.model_max_length,
            clip_pattern: Regex::new(CLIP_PATTERN).expect("valid pattern"),
            piece_pattern: Regex::new(PIECE_PATTERN).expect("valid pattern"),
            whitespace: Regex::new(r"\s+").expect("valid pattern"),
        }
    }

    /// The text encoder's sequence length (`model_max_length` of `tokenizer_config.json`, 77 in
    /// Stable Diffusion).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// The number of ids: one more than the largest id of the vocabulary and the special tokens
    /// (the vocabulary's size for the CLIP tokenizers, whose special tokens are in it).
    pub fn vocab_size(&self) -> usize {
        let largest = self
            .vocab
            .values()
            .chain(self.specials.iter().map(|s| &s.id))
            .max();
        largest.map_or(0, |&id| id as usize + 1)
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

    /// Applies the merges to one pre-tokenised, byte-mapped piece: always the adjacent pair of
    /// lowest rank, the leftmost of equal ones (a heap of candidate pairs, as `tokenizers` does,
    /// so that long words take O(n log n)).
    fn bpe(&self, piece: &str, f: &mut dyn FnMut(&str, u32)) {
        const NONE: usize = usize::MAX;
        let chars: Vec<char> = piece.chars().collect();
        let mut ids: Vec<u32> = chars
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
        let n = ids.len();
        // A doubly linked list over the symbols; merged-away symbols are unlinked.
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        let mut alive = vec![true; n];
        // Candidate merges: (rank, position of the left symbol, merged id).
        let mut heap = BinaryHeap::new();
        let candidate = |left: u32, right: u32, pos: usize| {
            self.merges
                .get(&(left, right))
                .map(|&(rank, id)| Reverse((rank, pos, id)))
        };
        heap.extend((0..n.saturating_sub(1)).filter_map(|i| candidate(ids[i], ids[i + 1], i)));
        while let Some(Reverse((rank, pos, id))) = heap.pop() {
            let right = next[pos];
            // Stale when either symbol has changed since the pair was pushed.
            if !alive[pos] || right == NONE {
                continue;
            }
            if self.merges.get(&(ids[pos], ids[right])) != Some(&(rank, id)) {
                continue;
            }
            ids[pos] = id;
            alive[right] = false;
            next[pos] = next[right];
            if next[pos] != NONE {
                prev[next[pos]] = pos;
                heap.extend(candidate(id, ids[next[pos]], pos));
            }
            if prev[pos] != NONE {
                heap.extend(candidate(ids[prev[pos]], id, prev[pos]));
            }
        }
        for (id, _) in ids.into_iter().zip(alive).filter(|&(_, alive)| alive) {
            f(self.token(id), id);
        }
    }

    /// The token of a vocabulary id (every id the merges produce is in the vocabulary).
    fn token(&self, id: u32) -> &str {
        self.tokens.get(&id).map_or("", String::as_str)
    }
}
