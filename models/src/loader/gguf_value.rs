//! GGUF metadata values, typed as the file stores them.
//!
//! Arrays stay typed vectors (not vectors of enums) so a large token list costs what it
//! weighs in the file, which keeps the parser's allocations proportional to the file size.

use serde_json::Value;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8 (invalid UTF-8 is replaced, as token strings are sometimes raw bytes).
    String(String),
    /// Type 9.
    Array(GgufArray),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// A typed metadata array (typed so a million-entry token list is not a million enums).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// Array of u8.
    U8(Vec<u8>),
    /// Array of i8.
    I8(Vec<i8>),
    /// Array of u16.
    U16(Vec<u16>),
    /// Array of i16.
    I16(Vec<i16>),
    /// Array of u32.
    U32(Vec<u32>),
    /// Array of i32.
    I32(Vec<i32>),
    /// Array of f32.
    F32(Vec<f32>),
    /// Array of bool.
    Bool(Vec<bool>),
    /// Array of strings.
    String(Vec<String>),
    /// Array of arrays.
    Array(Vec<GgufArray>),
    /// Array of u64.
    U64(Vec<u64>),
    /// Array of i64.
    I64(Vec<i64>),
    /// Array of f64.
    F64(Vec<f64>),
}

impl GgufArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is an f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A float as JSON. GGUF stores config floats as f32; widening via the shortest decimal that
/// round-trips recovers the value the converter was given (`1e-5`, not `9.99999974e-6`), so
/// GGUF and `config.json` describe equal configs. JSON has no NaN or infinity: those become
/// strings, which no numeric config field accepts, so reading one names the key and the value.
fn float_json(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

fn f32_json(x: f32) -> Value {
    float_json(x.to_string().parse().unwrap_or(f64::from(x)))
}

impl GgufValue {
    /// The value as JSON, so metadata can be read through the same serde structs as a
    /// `config.json`.
    pub fn to_json(&self) -> Value {
        match self {
            GgufValue::U8(v) => (*v).into(),
            GgufValue::I8(v) => (*v).into(),
            GgufValue::U16(v) => (*v).into(),
            GgufValue::I16(v) => (*v).into(),
            GgufValue::U32(v) => (*v).into(),
            GgufValue::I32(v) => (*v).into(),
            GgufValue::U64(v) => (*v).into(),
            GgufValue::I64(v) => (*v).into(),
            GgufValue::F32(v) => f32_json(*v),
            GgufValue::F64(v) => float_json(*v),
            GgufValue::Bool(v) => (*v).into(),
            GgufValue::String(v) => v.as_str().into(),
            GgufValue::Array(a) => a.to_json(),
        }
    }
}

impl GgufArray {
    /// The array as a JSON array (see [`GgufValue::to_json`]).
    pub fn to_json(&self) -> Value {
        fn all<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Value {
            Value::Array(v.iter().map(|&x| f(x)).collect())
        }
        match self {
            GgufArray::U8(v) => all(v, Value::from),
            GgufArray::I8(v) => all(v, Value::from),
            GgufArray::U16(v) => all(v, Value::from),
            GgufArray::I16(v) => all(v, Value::from),
            GgufArray::U32(v) => all(v, Value::from),
            GgufArray::I32(v) => all(v, Value::from),
            GgufArray::U64(v) => all(v, Value::from),
            GgufArray::I64(v) => all(v, Value::from),
            GgufArray::F32(v) => all(v, f32_json),
            GgufArray::F64(v) => all(v, float_json),
            GgufArray::Bool(v) => all(v, Value::from),
            GgufArray::String(v) => Value::Array(v.iter().map(|s| s.as_str().into()).collect()),
            GgufArray::Array(v) => Value::Array(v.iter().map(GgufArray::to_json).collect()),
        }
    }
}
