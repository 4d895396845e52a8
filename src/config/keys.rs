//! Test support for `config`: every key the config files accept, derived from the serde
//! field names of [`FileConfig`] itself (a tracing `Deserializer` that answers each
//! `deserialize_struct` with its own field list), so the man page check in this file
//! can never miss a key a new field adds. Used only by tests; neighbours: `config`
//! (the structs), `man/hoardcc.toml.5` (what it checks).

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::FileConfig;

/// Every key of the config file as `key` (top level) or `table.key`, in struct order.
pub fn file_keys() -> Vec<String> {
    let mut keys = Vec::new();
    // Tracing fills `keys` whatever the value says; an error would mean a field type the
    // tracer cannot imitate, which the caller's check then reports as missing keys.
    let _ = FileConfig::deserialize(Tracer {
        prefix: String::new(),
        keys: &mut keys,
    });
    keys
}

#[derive(Debug)]
struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

/// Imitates a value of whatever type is asked for; for a struct, records its fields
/// (under `prefix`) and feeds each one another tracer.
struct Tracer<'a> {
    prefix: String,
    keys: &'a mut Vec<String>,
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, TraceError> {
        Err(TraceError(format!("untraceable value at {}", self.prefix)))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let prefix = self.prefix;
        // A nested struct is a table: its own key is the table name, not a key.
        if !prefix.is_empty() {
            let table = prefix.trim_end_matches('.');
            self.keys.retain(|k| k != table);
        }
        visitor.visit_map(Fields {
            prefix,
            fields,
            next: 0,
            keys: self.keys,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_bool(false)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u8(0)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u16(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u32(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u64(0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_i64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_string(String::new())
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(Empty)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let first = variants.first().copied().unwrap_or("");
        visitor.visit_enum(first.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u128 f32 char bytes byte_buf unit unit_struct newtype_struct
        tuple tuple_struct map identifier ignored_any
    }
}

/// The fields of one struct, each answered by a tracer.
struct Fields<'a> {
    prefix: String,
    fields: &'static [&'static str],
    next: usize,
    keys: &'a mut Vec<String>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        let Some(name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        self.keys.push(format!("{}{name}", self.prefix));
        seed.deserialize((*name).into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(Tracer {
            prefix: format!("{}{name}.", self.prefix),
            keys: self.keys,
        })
    }
}

/// An empty sequence.
struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        Ok(None)
    }
}

/// The keys `man/hoardcc.toml.5` documents: `.TP` then `.B key` items, under `.SS [table]`
/// headings for tables (top-level keys under any other `.SS`).
pub fn man_keys(man: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut table: Option<String> = None;
    let mut after_tp = false;
    for line in man.lines() {
        if let Some(h) = line.strip_prefix(".SS ") {
            let h = h.trim().trim_matches('"');
            table = h
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .map(str::to_string);
        } else if line.starts_with(".SH ") {
            table = None;
        } else if after_tp {
            if let Some(k) = line.strip_prefix(".B ") {
                let k = k
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .replace("\\-", "-");
                keys.push(match &table {
                    Some(t) => format!("{t}.{k}"),
                    None => k,
                });
            }
        }
        after_tp = line.trim() == ".TP";
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_traced_from_the_structs() {
        let keys = file_keys();
        for k in [
            "hosts",
            "fallback",
            "backoff_secs",
            "ssh.connect_timeout_secs",
            "server.max_jobs",
            "server.sandbox",
            "server.tmpdir",
            "mux.channels_per_connection",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not traced: {keys:?}");
        }
        assert!(!keys
            .iter()
            .any(|k| k == "ssh" || k == "server" || k == "mux"));
        // Every traced key is accepted by the real parser (so the tracer invents none).
        for k in &keys {
            let (table, key) = k
                .split_once('.')
                .map_or((None, k.as_str()), |(t, k)| (Some(t), k));
            let value = "0";
            let text = match table {
                Some(t) => format!("[{t}]\n{key} = {value}\n"),
                None => format!("{key} = {value}\n"),
            };
            if let Err(e) = FileConfig::parse(&text) {
                assert!(!e.to_string().contains("unknown field"), "{k}: {e}");
            }
        }
    }

    #[test]
    fn man_page_items_are_read_per_table() {
        let man = ".SH FILE\n.SS \"Top-level keys\"\n.TP\n.B hosts\nx\n.SS [ssh]\n.TP\n.B io_timeout_secs\n.B not_an_item\n.SH SEE ALSO\n";
        assert_eq!(man_keys(man), ["hosts", "ssh.io_timeout_secs"]);
    }

    /// man/hoardcc.toml.5 documents exactly the keys the config structs accept.
    #[test]
    fn hoardcc_toml_5_documents_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/hoardcc.toml.5");
        let man = std::fs::read_to_string(path).expect("read man/hoardcc.toml.5");
        let documented = man_keys(&man);
        let keys = file_keys();
        let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
        let stale: Vec<&String> = documented.iter().filter(|k| !keys.contains(k)).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "man/hoardcc.toml.5 is out of date.\n  keys to add (a `.TP` + `.B KEY` item under `.SS [TABLE]`, top-level keys under `.SS \"Top-level keys\"`): {missing:?}\n  documented keys that no longer exist: {stale:?}"
        );
    }
}
