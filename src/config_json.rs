//! Typed lookups in the JSON object of a diffusers config file (`config.json`,
//! `scheduler_config.json`), with errors that name the file and the key.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Typed lookups in a JSON object, with errors that name the key.
pub(crate) struct Fields<'a> {
    /// The file (or other source) named in errors.
    pub source_name: &'a str,
}

impl Fields<'_> {
    pub(crate) fn error(&self, key: &str, message: String) -> Error {
        Error::Config {
            source_name: self.source_name.to_string(),
            key: key.to_string(),
            message,
        }
    }

    pub(crate) fn expected(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, got {found}"))
    }

    pub(crate) fn bool(&self, map: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.expected(key, "true or false", other)),
        }
    }

    pub(crate) fn f64(&self, map: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
        match map.get(key) {
            None => Ok(default),
            Some(v @ Value::Number(n)) => {
                n.as_f64().ok_or_else(|| self.expected(key, "a number", v))
            }
            Some(other) => Err(self.expected(key, "a number", other)),
        }
    }

    pub(crate) fn usize(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: usize,
    ) -> Result<usize> {
        match map.get(key) {
            None => Ok(default),
            Some(v) => as_usize(v).ok_or_else(|| self.expected(key, "a non-negative integer", v)),
        }
    }

    pub(crate) fn optional_usize(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Option<usize>,
    ) -> Result<Option<usize>> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => as_usize(v)
                .map(Some)
                .ok_or_else(|| self.expected(key, "null or a non-negative integer", v)),
        }
    }

    pub(crate) fn usize_list(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Vec<usize>,
    ) -> Result<Vec<usize>> {
        match map.get(key) {
            None => Ok(default),
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

    pub(crate) fn choice<T: Copy>(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T> {
        match map.get(key) {
            None => Ok(default),
            Some(v) => lookup(v, options).ok_or_else(|| {
                self.error(key, format!("unsupported value {v} {}", supported(options)))
            }),
        }
    }

    pub(crate) fn choice_list<T: Copy>(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Vec<T>,
        options: &[(&str, T)],
    ) -> Result<Vec<T>> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    lookup(item, options).ok_or_else(|| {
                        self.error(
                            key,
                            format!("entry {i}: unsupported value {item} {}", supported(options)),
                        )
                    })
                })
                .collect(),
            Some(other) => Err(self.expected(key, "a list of block type names", other)),
        }
    }

    /// Checks that a string option has one of the supported values (or is null, when
    /// `null_ok`, which diffusers treats as the first supported value).
    pub(crate) fn supported_str(
        &self,
        map: &Map<String, Value>,
        key: &str,
        options: &[&str],
        null_ok: bool,
    ) -> Result<()> {
        match map.get(key) {
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
}

/// A JSON integer that fits a `usize`.
fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn lookup<T: Copy>(value: &Value, options: &[(&str, T)]) -> Option<T> {
    let s = value.as_str()?;
    options
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, value)| value)
}

fn supported<T>(options: &[(&str, T)]) -> String {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    format!("(supported: {})", names.join(", "))
}
