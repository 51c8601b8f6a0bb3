//! Typed reads of a diffusers JSON configuration, with errors that name the file and the key.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses `text` as a JSON object. Python's `json` writes infinities as the bare tokens
/// `Infinity` / `-Infinity` (diffusers' `lambda_min_clipped` default), which JSON lacks: they
/// are read as `null`, the key's default.
pub(crate) fn parse_json_object(text: &str, source_name: &str) -> Result<Map<String, Value>> {
    let error = |message: String| Error::Config {
        source_name: source_name.to_string(),
        key: "(file)".into(),
        message,
    };
    let text = text
        .replace("-Infinity", "null")
        .replace("Infinity", "null");
    match serde_json::from_str(&text).map_err(|e| error(format!("not JSON: {e}")))? {
        Value::Object(map) => Ok(map),
        _ => Err(error("expected a JSON object".into())),
    }
}

/// Typed lookups in a JSON object, with errors that name the key.
pub(crate) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    pub source_name: &'a str,
}

impl Fields<'_> {
    pub fn error(&self, key: &str, expected: &str, found: &Value) -> Error {
        Error::Config {
            source_name: self.source_name.to_string(),
            key: key.to_string(),
            message: format!("expected {expected}, got {found}"),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(key, "true or false", other)),
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| self.error(key, "a number", &Value::Number(n.clone()))),
            Some(other) => Err(self.error(key, "a number", other)),
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.error(key, "a non-negative integer", v)),
        }
    }

    pub fn choice<T: Copy>(&self, key: &str, default: T, options: &[(&str, T)]) -> Result<T> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .and_then(|s| options.iter().find(|(name, _)| *name == s))
                .map(|(_, value)| *value)
                .ok_or_else(|| {
                    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
                    self.error(key, &format!("one of {}", names.join(", ")), v)
                }),
        }
    }

    /// A string value, or `default` when absent or null.
    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.error(key, "a string", other)),
        }
    }

    /// A list of non-negative integers, empty when absent or null.
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| self.error(key, "a list of non-negative integers", item))
                })
                .collect(),
            Some(other) => Err(self.error(key, "a list of non-negative integers", other)),
        }
    }

    pub fn optional_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_f64()
                        .ok_or_else(|| self.error(key, "a list of numbers", item))
                })
                .collect::<Result<Vec<f64>>>()
                .map(Some),
            Some(other) => Err(self.error(key, "null or a list of numbers", other)),
        }
    }
}
