//! Typed lookups in the JSON files of a pipeline folder, with errors that name the file and key.

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

    fn expected(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, got {found}"))
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

    /// A finite number, `default` when absent.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.expected(key, "a finite number", v)),
        }
    }

    /// A finite number or `null` (`None`), `default` when absent.
    pub fn optional_f64(&self, key: &str, default: Option<f64>) -> Result<Option<f64>> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(_) => self.f64(key, 0.0).map(Some),
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

    /// A string, `default` when absent.
    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.map.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.expected(key, "a string", other)),
        }
    }

    /// A list of non-negative integers, `default` when absent.
    pub fn usize_list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.map.get(key) {
            None => Ok(default.to_vec()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    as_usize(item).ok_or_else(|| {
                        self.error(
                            key,
                            format!("entry {i}: expected a non-negative integer, got {item}"),
                        )
                    })
                })
                .collect(),
            Some(other) => Err(self.expected(key, "a list of non-negative integers", other)),
        }
    }

    /// A list of strings, `default` when absent.
    pub fn string_list(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        match self.map.get(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        self.error(key, format!("entry {i}: expected a string, got {item}"))
                    })
                })
                .collect(),
            Some(other) => Err(self.expected(key, "a list of strings", other)),
        }
    }

    /// Checks that `key`, when present, is a string among `options` (or `null` when `null_ok`).
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
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|key| !key.starts_with('_') && !known.contains(&key.as_str()))
            .collect();
        unknown.sort_unstable();
        for key in unknown {
            log::warn!(
                "{}: `{key}` is not a {what} parameter; ignored",
                self.source_name
            );
        }
    }
}

/// A JSON integer that fits a `usize`.
fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}
