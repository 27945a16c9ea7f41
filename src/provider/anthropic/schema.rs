//! JSON Schemas as Anthropic's structured outputs accept them.
//!
//! Schemas made by zod (`zodResponseFormat`, the AI SDK's `generateObject`) and pydantic carry
//! keywords Anthropic refuses for structured output and strict tools: `$schema`, numeric bounds
//! (zod writes `minimum`/`maximum` at ±2^53 for every integer), string lengths and patterns,
//! `minItems` above 1. As Anthropic's own SDK does, the schema is rebuilt from what the API
//! supports (types, `properties`, `required`, `items`, `enum`, `const`, `anyOf` (for `oneOf`
//! too), `allOf`, `$ref`/`$defs`, the string formats it knows, `minItems` of 0 or 1), objects
//! get `additionalProperties: false`, and every other keyword is written into the
//! `description`, where the model may still follow it. `$schema` is dropped.

use serde_json::{Map, Value};

/// String formats Anthropic's structured outputs support.
const STRING_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
];

/// Keywords with no meaning to the model: dropped, not described.
const DROPPED: &[&str] = &["$schema", "$id", "$comment"];

/// `schema` rebuilt as Anthropic's structured outputs accept it; see the [module docs](self).
pub(crate) fn strict(schema: &Value) -> Value {
    let Value::Object(src) = schema else {
        return schema.clone();
    };
    let mut rest = src.clone();
    let mut out = Map::new();
    if let Some(Value::Object(defs)) = rest.remove("$defs") {
        let defs = defs.iter().map(|(k, v)| (k.clone(), strict(v))).collect();
        out.insert("$defs".into(), Value::Object(defs));
    }
    if let Some(r) = rest.remove("$ref") {
        out.insert("$ref".into(), r);
        if let Some(d) = rest.remove("description") {
            out.insert("description".into(), d);
        }
        return Value::Object(out);
    }
    for k in DROPPED {
        rest.remove(*k);
    }
    let mut kind = rest.remove("type");
    let any_of = rest.remove("anyOf").or_else(|| rest.remove("oneOf"));
    let all_of = rest.remove("allOf");
    let primitive = |v: &Value| !v.is_object() && !v.is_array();
    if let Some(Value::Array(e)) = rest.get("enum") {
        if !e.is_empty() && e.iter().all(primitive) {
            out.insert("enum".into(), rest.remove("enum").unwrap_or_default());
        }
    }
    if rest.get("const").is_some_and(primitive) {
        out.insert("const".into(), rest.remove("const").unwrap_or_default());
    }
    let literal = out.contains_key("enum") || out.contains_key("const");
    if literal {
        kind = None;
    }
    if let Some(Value::Array(variants)) = any_of {
        out.insert("anyOf".into(), variants.iter().map(strict).collect());
    } else if let Some(Value::Array(variants)) = all_of {
        out.insert("allOf".into(), variants.iter().map(strict).collect());
    } else if let Some(k) = &kind {
        out.insert("type".into(), k.clone());
    }
    for k in ["description", "title"] {
        if let Some(v) = rest.remove(k) {
            out.insert(k.into(), v);
        }
    }
    match kind.as_ref().and_then(Value::as_str) {
        Some("object") => {
            let props = match rest.remove("properties") {
                Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.clone(), strict(v))).collect(),
                _ => Map::new(),
            };
            out.insert("properties".into(), Value::Object(props));
            rest.remove("additionalProperties");
            out.insert("additionalProperties".into(), Value::Bool(false));
            if let Some(r) = rest.remove("required") {
                out.insert("required".into(), r);
            }
        }
        Some("string") => {
            if let Some(f) = rest.remove("format") {
                if f.as_str().is_some_and(|f| STRING_FORMATS.contains(&f)) {
                    out.insert("format".into(), f);
                } else {
                    rest.insert("format".into(), f);
                }
            }
        }
        Some("array") => {
            if let Some(items) = rest.remove("items") {
                out.insert("items".into(), strict(&items));
            }
            if let Some(n) = rest.remove("minItems") {
                if matches!(n.as_u64(), Some(0 | 1)) {
                    out.insert("minItems".into(), n);
                } else {
                    rest.insert("minItems".into(), n);
                }
            }
        }
        _ => {}
    }
    if !rest.is_empty() {
        // What the API cannot enforce, said in words.
        let said: Vec<String> = rest.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let extra = format!("{{{}}}", said.join(", "));
        let description = match out.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{extra}"),
            None => extra,
        };
        out.insert("description".into(), Value::String(description));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_zod_schema_becomes_one_anthropic_accepts() {
        let zod = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "age": {"type": "integer", "minimum": -9007199254740991i64, "maximum": 9007199254740991i64},
                "name": {"type": "string", "minLength": 1, "description": "Who"},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "either": {"oneOf": [{"type": "string"}, {"type": "null"}]}
            },
            "required": ["age", "name"],
            "additionalProperties": true
        });
        let s = strict(&zod);
        assert!(s.get("$schema").is_none());
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["age", "name"]));
        let p = &s["properties"];
        assert_eq!(p["age"]["type"], "integer");
        assert!(p["age"].get("minimum").is_none() && p["age"].get("maximum").is_none());
        assert!(p["age"]["description"]
            .as_str()
            .unwrap()
            .contains("minimum: -9007199254740991"));
        assert_eq!(p["name"]["description"], "Who\n\n{minLength: 1}");
        assert_eq!(p["when"]["format"], "date-time");
        assert!(p["tags"].get("minItems").is_none());
        assert_eq!(p["kind"], json!({"enum": ["a", "b"]}));
        assert_eq!(p["either"]["anyOf"][1], json!({"type": "null"}));
    }

    #[test]
    fn refs_and_defs_are_kept() {
        let s = strict(
            &json!({"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {}}}}),
        );
        assert_eq!(s["$ref"], "#/$defs/A");
        assert_eq!(s["$defs"]["A"]["additionalProperties"], false);
    }
}
