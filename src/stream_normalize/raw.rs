//! Splicing JSON objects without a full parse: the fields the gateway rewrites are replaced,
//! every other field is copied byte for byte from the provider's text. This keeps unknown
//! fields exact and costs a fraction of a typed round trip on the hot path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON object as its keys and the raw text of their values, in order.
#[derive(Debug, Default)]
pub(crate) struct RawObject<'a> {
    pub(crate) entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawObject<'a>, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key_seed(CowStr)? {
                    let v: &'de RawValue = map.next_value()?;
                    entries.push((k, v));
                }
                Ok(RawObject { entries })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A stream chunk read in one pass: top-level fields raw, except `choices`, whose objects are
/// read with their `delta` split into raw fields too.
#[derive(Debug, Default)]
pub(crate) struct ChunkView<'a> {
    pub(crate) entries: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `Some` when the chunk has a `choices` array; the entry for it stays in `entries`.
    pub(crate) choices: Option<Vec<ChoiceView<'a>>>,
}

/// One choice of a [`ChunkView`].
#[derive(Debug, Default)]
pub(crate) struct ChoiceView<'a> {
    pub(crate) entries: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The `delta`, split into fields (`None`: absent or null).
    pub(crate) delta: Option<RawObject<'a>>,
}

impl<'a> ChunkView<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'a> ChoiceView<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A placeholder value for entries whose content lives elsewhere in the view.
fn placeholder() -> &'static RawValue {
    // `null` is valid JSON; the constant cannot fail to parse.
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".to_owned()).expect("null is JSON"))
}

impl<'de: 'a, 'a> Deserialize<'de> for ChunkView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ChunkView<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ChunkView<'a>, M::Error> {
                let mut view = ChunkView {
                    entries: Vec::with_capacity(map.size_hint().unwrap_or(8)),
                    choices: None,
                };
                while let Some(k) = map.next_key_seed(CowStr)? {
                    if k == "choices" {
                        let choices: Option<Vec<ChoiceView<'a>>> = map.next_value()?;
                        if choices.is_some() {
                            view.choices = choices;
                            view.entries.push((k, placeholder()));
                        }
                        continue;
                    }
                    let v: &'de RawValue = map.next_value()?;
                    view.entries.push((k, v));
                }
                Ok(view)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ChoiceView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ChoiceView<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a choice object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ChoiceView<'a>, M::Error> {
                let mut view = ChoiceView {
                    entries: Vec::with_capacity(map.size_hint().unwrap_or(4)),
                    delta: None,
                };
                while let Some(k) = map.next_key_seed(CowStr)? {
                    if k == "delta" {
                        view.delta = map.next_value::<Option<RawObject<'a>>>()?;
                        continue;
                    }
                    let v: &'de RawValue = map.next_value()?;
                    view.entries.push((k, v));
                }
                Ok(view)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Deserialises a key, borrowing it when it holds no escapes.
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// Writes JSON objects field by field into a byte buffer.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    pub(crate) fn begin(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    // The `Cow` variant is the point: a borrowed key had no escapes and is copied as it is.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn key(&mut self, key: &Cow<'_, str>) -> &mut Vec<u8> {
        self.sep();
        match key {
            // Borrowed from the provider's text: it had no escapes, so it is valid as it is.
            Cow::Borrowed(k) => {
                self.out.push(b'"');
                self.out.extend_from_slice(k.as_bytes());
                self.out.push(b'"');
            }
            Cow::Owned(k) => write_str(self.out, k),
        }
        self.out.push(b':');
        self.out
    }

    #[allow(clippy::ptr_arg)]
    pub(crate) fn raw(&mut self, key: &Cow<'_, str>, value: &RawValue) {
        self.key(key).extend_from_slice(value.get().as_bytes());
    }

    pub(crate) fn str_field(&mut self, key: &'static str, value: &str) {
        self.key(&Cow::Borrowed(key));
        write_str(self.out, value);
    }

    /// A field whose value is already JSON text (a pre-escaped string, `null`, a number).
    pub(crate) fn raw_field(&mut self, key: &'static str, raw: &str) {
        self.key(&Cow::Borrowed(key))
            .extend_from_slice(raw.as_bytes());
    }

    pub(crate) fn json_field<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) {
        let out = self.key(&Cow::Borrowed(key));
        // Serialising our own values into memory cannot fail.
        let _ = serde_json::to_writer(out, value);
    }

    fn sep(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(b',');
        }
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_keeps_order_escapes_and_raw_values() {
        let text = r#"{"id":"x","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m"}"#;
        let obj: RawObject<'_> = serde_json::from_str(text).unwrap();
        assert!(matches!(obj.entries[1].0, Cow::Owned(_)));
        let mut out = Vec::new();
        let mut w = ObjectWriter::begin(&mut out);
        for (k, v) in &obj.entries {
            match k.as_ref() {
                "id" => w.str_field("id", "gen-1"),
                _ => w.raw(k, v),
            }
        }
        w.end();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"gen-1","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m"}"#
        );
        assert!(serde_json::from_str::<RawObject<'_>>("[1]").is_err());
    }
}
