//! Serde field types for the loosely typed JSON of model configs, and the one entry point that
//! deserializes a config with errors naming the file and the key path.
//!
//! HF configs write `null` for "use the default", some exporters write integers as floats
//! (`128.0`), and token ids come as one integer or a list; the types here accept exactly that.
//! Their `expecting` texts make serde's messages say what a valid value looks like.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::{LoadError, Result};
use super::json::{MAX_DIM, kind};

/// Deserializes `value` (a whole config) into `T`. A failure is a `Config` error whose field is
/// the key path serde was at (`rope_scaling.factor`, `eos_token_id[1]`).
pub(crate) fn from_config_json<T: DeserializeOwned>(value: &Value, path: &Path) -> Result<T> {
    // A derived struct would also accept an array, reading it positionally.
    if !value.is_object() {
        return Err(LoadError::config(
            path,
            "<root>",
            format!("expected a JSON object, found {}", kind(value)),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        LoadError::config(path, &field, e.into_inner().to_string())
    })
}

/// A dimension or count: a non-negative integer of at most `MAX_DIM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dim(pub usize);

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct DimVisitor;

        impl DimVisitor {
            fn bounded<E: de::Error>(n: u64) -> std::result::Result<Dim, E> {
                // Bounded so a corrupt config cannot drive huge allocations or overflowing
                // products.
                match usize::try_from(n) {
                    Ok(n) if n <= MAX_DIM => Ok(Dim(n)),
                    _ => Err(E::custom(format!(
                        "{n} is implausibly large (limit {MAX_DIM})"
                    ))),
                }
            }
        }

        impl Visitor<'_> for DimVisitor {
            type Value = Dim;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Dim, E> {
                Self::bounded(n)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Dim, E> {
                match u64::try_from(n) {
                    Ok(n) => Self::bounded(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }

            fn visit_f64<E: de::Error>(self, x: f64) -> std::result::Result<Dim, E> {
                // Some exporters write integers as floats (`128.0`); accept only exact ones.
                if x.fract() == 0.0 && (0.0..2f64.powi(53)).contains(&x) {
                    Self::bounded(x as u64)
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(x), &self))
                }
            }
        }

        d.deserialize_any(DimVisitor)
    }
}

/// Token ids given as one integer or a list (HF allows both for `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenIds(pub Vec<u32>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct TokenIdsVisitor;

        impl<'de> Visitor<'de> for TokenIdsVisitor {
            type Value = TokenIds;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token id (u32) or a list of them")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<TokenIds, E> {
                u32::try_from(n)
                    .map(|id| TokenIds(vec![id]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<TokenIds, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<TokenIds, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                Ok(TokenIds(ids))
            }
        }

        d.deserialize_any(TokenIdsVisitor)
    }
}

/// For `#[serde(deserialize_with)]`: `null` means the default, as an absent key does.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// For `#[serde(deserialize_with)]`: a nested object, `None` for `null`. Anything else is
/// refused by kind, where a derived struct would read an array positionally.
pub(crate) fn object<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_unit<E: de::Error>(self) -> std::result::Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> std::result::Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Option<T>, A::Error> {
            // Deserializing from the same map access keeps the caller's key-path tracking.
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }

    d.deserialize_any(ObjectVisitor(PhantomData))
}
