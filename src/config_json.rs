//! Typed lookups in the JSON files of diffusers and transformers folders (`config.json`,
//! `scheduler_config.json`, `model_index.json`, tokenizer files), with errors that name the
//! file and the key. Every config reader of the crate goes through [`JsonObject`].

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads a file as UTF-8 text, with an [`Error::Io`] naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A parsed JSON object and the name of the file it came from.
pub(crate) struct JsonObject {
    /// The file's name in errors.
    pub source_name: String,
    /// The object's keys and values.
    pub map: Map<String, Value>,
}

impl JsonObject {
    /// Parses `text`, which must hold one JSON object.
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let error = |message: String| Error::Config {
            source_name: source_name.to_string(),
            key: "(file)".into(),
            message,
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Self {
                source_name: source_name.to_string(),
                map,
            }),
            Ok(_) => Err(error("expected a JSON object".into())),
            Err(e) => Err(error(format!("not JSON: {e}"))),
        }
    }

    /// Parses `text` as written by Python's `json` module, which writes infinities as the
    /// bare tokens `Infinity` / `-Infinity` (diffusers' `lambda_min_clipped` default): JSON
    /// lacks them, so they are read as `null`, the key's default. For files whose strings
    /// never hold these words (scheduler configs).
    pub fn parse_python(text: &str, source_name: &str) -> Result<Self> {
        let text = text
            .replace("-Infinity", "null")
            .replace("Infinity", "null");
        Self::parse(&text, source_name)
    }

    /// Reads and parses a JSON object file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&read_text(path)?, &path.display().to_string())
    }

    /// A [`Error::Config`] naming this file and `key`.
    pub fn error(&self, key: &str, message: String) -> Error {
        Error::Config {
            source_name: self.source_name.clone(),
            key: key.to_string(),
            message,
        }
    }

    /// A [`Error::Config`] saying `key` holds `found` where `expected` was expected.
    pub fn expected(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, got {found}"))
    }

    /// The value of `key`, `None` when absent or null.
    pub fn non_null(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The value of `key`, or an error saying it is missing.
    pub fn required(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .ok_or_else(|| self.error(key, "missing".into()))
    }

    /// A boolean, `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.expected(key, "true or false", other)),
        }
    }

    /// A number (JSON numbers are finite), `default` when absent.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.expected(key, "a number", v)),
        }
    }

    /// A number or `null` (`None`), `default` when absent.
    pub fn optional_f64(&self, key: &str, default: Option<f64>) -> Result<Option<f64>> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(_) => self.f64(key, 0.0).map(Some),
        }
    }

    /// A list of numbers, `None` when absent or null.
    pub fn optional_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_f64()
                        .ok_or_else(|| self.expected(key, "a list of numbers", item))
                })
                .collect::<Result<Vec<f64>>>()
                .map(Some),
            Some(other) => Err(self.expected(key, "null or a list of numbers", other)),
        }
    }

    /// A non-negative integer, `default` when absent.
    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => as_usize(v).ok_or_else(|| self.expected(key, "a non-negative integer", v)),
        }
    }

    /// A non-negative integer that must be present.
    pub fn required_usize(&self, key: &str) -> Result<usize> {
        let v = self.required(key)?;
        as_usize(v).ok_or_else(|| self.expected(key, "a non-negative integer", v))
    }

    /// A non-negative integer or `null` (`None`), `default` when absent.
    pub fn optional_usize(&self, key: &str, default: Option<usize>) -> Result<Option<usize>> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => as_usize(v)
                .map(Some)
                .ok_or_else(|| self.expected(key, "null or a non-negative integer", v)),
        }
    }

    /// A string, `default` when absent or null.
    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.non_null(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.expected(key, "a string", other)),
        }
    }

    /// A list of non-negative integers, `default` when absent or null.
    pub fn usize_list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        self.list(key, default.to_vec(), "non-negative integers", |item| {
            as_usize(item).ok_or_else(|| format!("expected a non-negative integer, got {item}"))
        })
    }

    /// A list of strings, `default` when absent or null.
    pub fn string_list(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        let default = default.iter().map(|s| s.to_string()).collect();
        self.list(key, default, "strings", |item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("expected a string, got {item}"))
        })
    }

    /// One of the named `options`, `default` when absent.
    pub fn choice<T: Copy>(&self, key: &str, default: T, options: &[(&str, T)]) -> Result<T> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => lookup(v, options).ok_or_else(|| {
                self.error(key, format!("unsupported value {v} {}", supported(options)))
            }),
        }
    }

    /// A list of names each among `options`, `default` when absent or null.
    pub fn choice_list<T: Copy>(
        &self,
        key: &str,
        default: Vec<T>,
        options: &[(&str, T)],
    ) -> Result<Vec<T>> {
        self.list(key, default, "names", |item| {
            lookup(item, options)
                .ok_or_else(|| format!("unsupported value {item} {}", supported(options)))
        })
    }

    /// Checks that `key`, when present, is a string among `options` (or `null` when `null_ok`,
    /// which diffusers treats as the first supported value).
    pub fn check_supported(&self, key: &str, options: &[&str], null_ok: bool) -> Result<()> {
        match self.map.get(key) {
            None => Ok(()),
            Some(Value::Null) if null_ok => Ok(()),
            Some(Value::String(s)) if options.contains(&s.as_str()) => Ok(()),
            Some(other) => {
                let mut names = options.join(", ");
                if null_ok {
                    names.push_str(", null");
                }
                Err(self.error(
                    key,
                    format!("unsupported value {other} (supported: {names})"),
                ))
            }
        }
    }

    /// Logs a warning for every key that is neither in `known` nor `_`-prefixed metadata.
    pub fn warn_unknown(&self, known: &[&str], what: &str) {
        for key in self.unknown_keys(known) {
            log::warn!(
                "{}: `{key}` is not a {what} parameter; ignored",
                self.source_name
            );
        }
    }

    /// The keys, sorted, that are neither in `known` nor `_`-prefixed metadata.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<&str> {
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|key| !key.starts_with('_') && !known.contains(key))
            .collect();
        unknown.sort_unstable();
        unknown
    }

    /// A list whose entries `entry` converts (its error names the entry), `default` when
    /// absent or null.
    fn list<T>(
        &self,
        key: &str,
        default: Vec<T>,
        what: &str,
        entry: impl Fn(&Value) -> std::result::Result<T, String>,
    ) -> Result<Vec<T>> {
        match self.non_null(key) {
            None => Ok(default),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    entry(item).map_err(|e| self.error(key, format!("entry {i}: {e}")))
                })
                .collect(),
            Some(other) => Err(self.expected(key, &format!("a list of {what}"), other)),
        }
    }
}

/// A JSON integer that fits a `usize`.
fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The value of the option named by the string `value`.
fn lookup<T: Copy>(value: &Value, options: &[(&str, T)]) -> Option<T> {
    let s = value.as_str()?;
    options
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, value)| value)
}

/// "(supported: a, b, c)" for the names of `options`.
fn supported<T>(options: &[(&str, T)]) -> String {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    format!("(supported: {})", names.join(", "))
}
