//! Conversion between property lists and JSON, for the JSON admin API.
//!
//! JSON has no data or date type, so they are spelled as one-key objects:
//! `{"$data": "<base64>"}` and `{"$date": "<RFC 3339>"}`. Everything else maps directly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use plist::Value;
use serde_json::{Map, Number, Value as Json};

/// Why a JSON value cannot become a plist value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlistJsonError {
    /// JSON `null` has no plist equivalent.
    #[error("null is not allowed in a property list (at {0})")]
    Null(String),
    /// A `$data` value is not valid base64.
    #[error("invalid base64 in $data at {0}")]
    BadData(String),
    /// A `$date` value is not RFC 3339.
    #[error("invalid RFC 3339 date in $date at {0}")]
    BadDate(String),
    /// A number is out of plist range.
    #[error("number out of range at {0}")]
    BadNumber(String),
}

/// Convert JSON to a plist value (see the module docs for `$data` / `$date`).
pub fn json_to_plist(json: &Json) -> Result<Value, PlistJsonError> {
    convert(json, "$")
}

fn convert(json: &Json, path: &str) -> Result<Value, PlistJsonError> {
    Ok(match json {
        Json::Null => return Err(PlistJsonError::Null(path.to_owned())),
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else {
                Value::Real(
                    n.as_f64()
                        .ok_or_else(|| PlistJsonError::BadNumber(path.to_owned()))?,
                )
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| convert(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => {
            if map.len() == 1 {
                if let Some(Json::String(s)) = map.get("$data") {
                    return B64
                        .decode(s)
                        .map(Value::Data)
                        .map_err(|_| PlistJsonError::BadData(path.to_owned()));
                }
                if let Some(Json::String(s)) = map.get("$date") {
                    let t = time::OffsetDateTime::parse(
                        s,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| PlistJsonError::BadDate(path.to_owned()))?;
                    return Ok(Value::Date(std::time::SystemTime::from(t).into()));
                }
            }
            let mut dict = plist::Dictionary::new();
            for (k, v) in map {
                dict.insert(k.clone(), convert(v, &format!("{path}.{k}"))?);
            }
            Value::Dictionary(dict)
        }
    })
}

/// Convert a plist value to JSON (see the module docs for `$data` / `$date`).
pub fn plist_to_json(value: &Value) -> Json {
    match value {
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i
            .as_signed()
            .map(Json::from)
            .or_else(|| i.as_unsigned().map(Json::from))
            .unwrap_or(Json::Null),
        Value::Real(r) => Number::from_f64(*r).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Data(d) => one("$data", Json::String(B64.encode(d))),
        Value::Date(d) => {
            let t = time::OffsetDateTime::from(std::time::SystemTime::from(*d));
            let s = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            one("$date", Json::String(s))
        }
        Value::Array(items) => Json::Array(items.iter().map(plist_to_json).collect()),
        Value::Dictionary(d) => Json::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), plist_to_json(v)))
                .collect(),
        ),
        Value::Uid(u) => Json::from(u.get()),
        _ => Json::Null,
    }
}

fn one(key: &str, v: Json) -> Json {
    let mut m = Map::new();
    m.insert(key.to_owned(), v);
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_all_types() {
        let j = json!({
            "s": "x", "i": -3, "u": 7, "f": 1.5, "b": true,
            "a": [1, "two"], "d": {"$data": "AAEC"}, "t": {"$date": "2024-01-02T03:04:05Z"}
        });
        let p = json_to_plist(&j).unwrap();
        let dict = p.as_dictionary().unwrap();
        assert_eq!(dict.get("d"), Some(&Value::Data(vec![0, 1, 2])));
        assert!(matches!(dict.get("t"), Some(Value::Date(_))));
        assert_eq!(plist_to_json(&p), j);
    }

    #[test]
    fn precise_errors() {
        let err = json_to_plist(&json!({"a": [1, null]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "null is not allowed in a property list (at $.a[1])"
        );
        assert!(matches!(
            json_to_plist(&json!({"$data": "!!"})),
            Err(PlistJsonError::BadData(_))
        ));
        assert!(matches!(
            json_to_plist(&json!({"$date": "yesterday"})),
            Err(PlistJsonError::BadDate(_))
        ));
    }
}
