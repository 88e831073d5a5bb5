//! Reading JSON files, and typed reads of fields of a `serde_json::Value` with errors that name
//! the file and the key.
//!
//! `Fields` serves the minimind format, whose config sits inside a document of base64 weights;
//! Hugging Face configs go through serde instead (`config_fields`, `hf_config`). Both accept
//! the same loose typing (`null` for "use the default", ints written as floats by some tools,
//! token ids as an int or a list).

use std::path::Path;

use serde_json::{Map, Value};

use super::error::{LoadError, Result};

/// Upper bound for any dimension or count in a config (2^31; real models stay below 2^20).
pub const MAX_DIM: usize = 1 << 31;

/// Reads a whole JSON file, naming it on I/O or syntax errors and on a key given twice.
pub fn read_json_file(path: &Path) -> Result<Value> {
    super::file::check_regular(path)?;
    let text = std::fs::read(path).map_err(|e| LoadError::io(path, e))?;
    parse_unique(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON like `serde_json::from_slice`, but refuses an object with a key given twice.
/// serde_json (like Python's `json`) silently keeps the last one, so a shard index listing a
/// tensor under two shards, or a header with two entries of one name, would load one of them
/// and ignore the other without a word.
pub fn parse_unique(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Unique>(bytes).map(|u| u.0)
}

/// A JSON value whose objects (at any depth) have no repeated key.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(v) = map.next_value()?;
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{key}` appears twice in one object"
                )));
            }
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

/// A JSON object plus the file it came from, for error messages.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    /// The object being read.
    pub obj: &'a Map<String, Value>,
    /// File the object was read from.
    pub path: &'a Path,
    /// Dotted prefix of the object inside the file (empty at top level).
    pub prefix: &'a str,
}

impl<'a> Fields<'a> {
    /// Wraps `value`, which must be an object.
    pub fn new(value: &'a Value, path: &'a Path, prefix: &'a str) -> Result<Self> {
        match value.as_object() {
            Some(obj) => Ok(Fields { obj, path, prefix }),
            None => Err(LoadError::config(
                path,
                if prefix.is_empty() { "<root>" } else { prefix },
                format!("expected a JSON object, found {}", kind(value)),
            )),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// An error about `key` in this object.
    pub fn err(&self, key: &str, msg: impl Into<String>) -> LoadError {
        LoadError::config(self.path, &self.key(key), msg)
    }

    /// The raw value, treating `null` like an absent key (HF writes `null` for "default").
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A non-negative integer (a dimension or count, at most `MAX_DIM`), if present.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .or_else(|| {
                // Some exporters write integers as floats (`128.0`); accept only exact ones.
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(53))
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                self.err(
                    key,
                    format!("expected a non-negative integer, found {}", short(v)),
                )
            })?;
        // Bounded so a corrupt config cannot drive huge allocations or overflowing products.
        match usize::try_from(n) {
            Ok(n) if n <= MAX_DIM => Ok(Some(n)),
            _ => Err(self.err(key, format!("{n} is implausibly large (limit {MAX_DIM})"))),
        }
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "required field is missing"))
    }

    /// A required positive integer (dimensions and counts of zero make no model).
    pub fn positive(&self, key: &str) -> Result<usize> {
        match self.usize(key)? {
            0 => Err(self.err(key, "must be positive, found 0")),
            n => Ok(n),
        }
    }

    /// A number, if present.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {}", short(v)))),
        }
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?
            .ok_or_else(|| self.err(key, "required field is missing"))
    }

    /// A boolean, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected a boolean, found {}", short(v)))),
        }
    }

    /// A string, if present.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, found {}", short(v)))),
        }
    }

    /// A token id, if present.
    pub fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => token_id(v).map(Some).ok_or_else(|| {
                self.err(
                    key,
                    format!("expected a token id (u32), found {}", short(v)),
                )
            }),
        }
    }

    /// Token ids given as one integer or a list (HF allows both for `eos_token_id`).
    pub fn opt_token_list(&self, key: &str) -> Result<Option<Vec<u32>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let bad = || {
            self.err(
                key,
                format!("expected a token id or a list of them, found {}", short(v)),
            )
        };
        match v {
            Value::Array(items) => items
                .iter()
                .map(|x| token_id(x).ok_or_else(bad))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => token_id(v).map(|t| Some(vec![t])).ok_or_else(bad),
        }
    }
}

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// JSON kind of a value, for "expected X, found Y" messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value rendered for a message, cut short so a base64 blob never floods a terminal.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        s
    } else {
        let cut = (0..=60).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    }
}
