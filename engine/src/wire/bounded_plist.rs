//! The one bounded decoder for every property list that comes from the network or from users:
//! check-in messages, command reports, MachineInfo, uploaded configuration profiles and raw
//! commands.
//!
//! A plist is small on the wire but not necessarily once decoded: a binary plist may reference
//! the same object many times, so 30 arrays that each hold the next one twice stand for 2^30
//! values in under 200 bytes, and 50,000 nested `<array>` elements make any recursive consumer
//! overflow its stack. [`decode`] therefore works in two passes over the event stream of the
//! `plist` crate:
//!
//! 1. a walk that builds nothing: it counts nesting depth, values (shared binary references
//!    counted once per use, as they would be expanded) and string/data bytes, and stops at the
//!    first limit of [`PlistLimits`] exceeded, so a rejected plist costs no more memory than the
//!    walk's reader state (proportional to the input, never to the expansion);
//! 2. only then the value itself, assembled with an explicit stack (no recursion).
//!
//! Only XML and binary (`bplist00`) property lists are accepted; devices never send the old
//! OpenStep text format. Neither pass recurses. Dropping a decoded [`Value`] recurses once per
//! nesting level, which [`PlistLimits::max_depth`] bounds (and [`PlistLimits::check`] keeps
//! small enough for any thread stack).

use std::fmt;
use std::io::Cursor;

use plist::stream::{BinaryReader, Event, OwnedEvent, XmlReader};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

/// Largest configurable [`PlistLimits::max_depth`]: dropping or converting a value recurses
/// once per level, and this keeps that well inside a 2 MiB thread stack.
pub const DEPTH_CEILING: usize = 256;

/// Limits on a property list from the network or a user (`[plist_limits]` in the config file).
///
/// The defaults pass what real devices send with room to spare (a Mac with 2,000 applications
/// reports about 70,000 values and 1 MiB of strings in `InstalledApplicationList`; check-in
/// messages nest three levels) and refuse the decompression bombs a binary plist allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PlistLimits {
    /// Deepest nesting of arrays and dictionaries (the root collection is level 1).
    pub max_depth: usize,
    /// Most values once expanded: every array, dictionary, key and scalar counts, and a binary
    /// plist's shared object counts once per reference to it.
    pub max_values: usize,
    /// Most bytes of strings, keys and data once expanded (shared ones counted per reference).
    pub max_bytes: usize,
    /// Largest input accepted at all, in bytes (HTTP endpoints also cap their bodies).
    pub max_input_bytes: usize,
}

impl Default for PlistLimits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_values: 500_000,
            max_bytes: 32 << 20,
            max_input_bytes: 32 << 20,
        }
    }
}

crate::setters::with_setters!(PlistLimits {
    with_max_depth => max_depth: usize,
    with_max_values => max_values: usize,
    with_max_bytes => max_bytes: usize,
    with_max_input_bytes => max_input_bytes: usize,
});

impl PlistLimits {
    /// Whether these limits can be used: each at least 1, `max_depth` at most
    /// [`DEPTH_CEILING`]. The message names the offending key.
    pub fn check(&self) -> Result<(), String> {
        if self.max_depth == 0 || self.max_depth > DEPTH_CEILING {
            return Err(format!("max_depth must be between 1 and {DEPTH_CEILING}"));
        }
        for (name, v) in [
            ("max_values", self.max_values),
            ("max_bytes", self.max_bytes),
            ("max_input_bytes", self.max_input_bytes),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// How a property list is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlistFormat {
    /// XML.
    Xml,
    /// Binary (`bplist00`).
    Binary,
}

impl PlistFormat {
    /// The format of `bytes`, told by the binary magic (anything else is read as XML).
    pub fn of(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"bplist") {
            Self::Binary
        } else {
            Self::Xml
        }
    }
}

impl fmt::Display for PlistFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xml => "XML",
            Self::Binary => "binary",
        })
    }
}

/// Why a property list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlistError {
    /// The input is larger than [`PlistLimits::max_input_bytes`].
    #[error("plist is {size} bytes, more than {max}")]
    InputTooLarge {
        /// The input's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Arrays and dictionaries nest deeper than [`PlistLimits::max_depth`].
    #[error("plist nesting deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More than [`PlistLimits::max_values`] values once expanded.
    #[error("plist has more than {max} values")]
    TooManyValues {
        /// The limit.
        max: usize,
    },
    /// More than [`PlistLimits::max_bytes`] bytes of strings and data once expanded.
    #[error("plist has more than {max} bytes of strings and data")]
    TooManyBytes {
        /// The limit.
        max: usize,
    },
    /// Not a well-formed property list in the format it looks like.
    #[error("not a valid {format} property list: {detail}")]
    Syntax {
        /// The format it looks like.
        format: PlistFormat,
        /// The parser's message.
        detail: String,
    },
}

impl PlistError {
    /// Whether a limit refused the plist (as opposed to its syntax).
    pub fn is_limit(&self) -> bool {
        !matches!(self, Self::Syntax { .. })
    }
}

/// Decode `bytes` (XML or binary) within `limits`. Never panics and never recurses with the
/// input's depth, whatever the bytes.
pub fn decode(bytes: &[u8], limits: &PlistLimits) -> Result<Value, PlistError> {
    decode_with_format(bytes, limits).map(|(v, _)| v)
}

/// [`decode`], also telling the format the plist was in.
pub fn decode_with_format(
    bytes: &[u8],
    limits: &PlistLimits,
) -> Result<(Value, PlistFormat), PlistError> {
    let format = check(bytes, limits)?;
    let value =
        build(events(bytes, format)).map_err(|detail| PlistError::Syntax { format, detail })?;
    Ok((value, format))
}

/// Decode a plist whose root must be a dictionary; `Ok(Err(value))` when it is something else.
pub fn decode_dictionary(
    bytes: &[u8],
    limits: &PlistLimits,
) -> Result<Result<Dictionary, Value>, PlistError> {
    Ok(match decode(bytes, limits)? {
        Value::Dictionary(d) => Ok(d),
        other => Err(other),
    })
}

/// The walk alone: check `bytes` against `limits` without building anything, and tell its
/// format. Syntax errors met on the way are reported too.
pub fn check(bytes: &[u8], limits: &PlistLimits) -> Result<PlistFormat, PlistError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(PlistError::InputTooLarge {
            size: bytes.len(),
            max: limits.max_input_bytes,
        });
    }
    let format = PlistFormat::of(bytes);
    let syntax = |e: plist::Error| PlistError::Syntax {
        format,
        detail: e.to_string(),
    };
    let mut depth = 0usize;
    let mut values = 0usize;
    let mut string_bytes = 0usize;
    for event in events(bytes, format) {
        let size = match event.map_err(syntax)? {
            Event::StartArray(_) | Event::StartDictionary(_) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(PlistError::TooDeep {
                        max: limits.max_depth,
                    });
                }
                0
            }
            Event::EndCollection => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::String(s) => s.len(),
            Event::Data(d) => d.len(),
            _ => 0,
        };
        values += 1;
        if values > limits.max_values {
            return Err(PlistError::TooManyValues {
                max: limits.max_values,
            });
        }
        string_bytes = string_bytes.saturating_add(size);
        if string_bytes > limits.max_bytes {
            return Err(PlistError::TooManyBytes {
                max: limits.max_bytes,
            });
        }
    }
    Ok(format)
}

type Events<'a> = Box<dyn Iterator<Item = Result<OwnedEvent, plist::Error>> + 'a>;

/// The event stream of `bytes` read as `format`.
fn events(bytes: &[u8], format: PlistFormat) -> Events<'_> {
    match format {
        PlistFormat::Binary => Box::new(BinaryReader::new(Cursor::new(bytes))),
        PlistFormat::Xml => Box::new(XmlReader::new(bytes)),
    }
}

/// A collection being assembled.
enum Open {
    Array(Vec<Value>),
    Dictionary(Dictionary, Option<String>),
}

/// Assemble a value from events with an explicit stack (the walk has bounded it already).
fn build(events: Events<'_>) -> Result<Value, String> {
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    for event in events {
        let value = match event.map_err(|e| e.to_string())? {
            // Lengths in the input are not trusted for allocation.
            Event::StartArray(_) => {
                stack.push(Open::Array(Vec::new()));
                continue;
            }
            Event::StartDictionary(_) => {
                stack.push(Open::Dictionary(Dictionary::new(), None));
                continue;
            }
            Event::EndCollection => match stack.pop() {
                Some(Open::Array(a)) => Value::Array(a),
                Some(Open::Dictionary(d, None)) => Value::Dictionary(d),
                Some(Open::Dictionary(_, Some(key))) => {
                    return Err(format!("dictionary key {key:?} has no value"));
                }
                None => return Err("a collection ends that never started".into()),
            },
            Event::Boolean(b) => Value::Boolean(b),
            Event::Data(d) => Value::Data(d.into_owned()),
            Event::Date(d) => Value::Date(d),
            Event::Integer(i) => Value::Integer(i),
            Event::Real(r) => Value::Real(r),
            Event::String(s) => Value::String(s.into_owned()),
            Event::Uid(u) => Value::Uid(u),
            _ => return Err("unsupported plist element".into()),
        };
        match stack.last_mut() {
            None if root.is_none() => root = Some(value),
            None => return Err("more than one value at the top level".into()),
            Some(Open::Array(a)) => a.push(value),
            Some(Open::Dictionary(d, key)) => match key.take() {
                Some(k) => {
                    d.insert(k, value);
                }
                None => match value {
                    Value::String(k) => *key = Some(k),
                    _ => return Err("a dictionary key is not a string".into()),
                },
            },
        }
    }
    if !stack.is_empty() {
        return Err("the plist ends inside a collection".into());
    }
    root.ok_or_else(|| "the plist holds no value".into())
}

/// Plists that attack a decoder, for tests and fuzz seeds (the same bytes are committed under
/// `fuzz/corpus/checkin/`).
#[cfg(test)]
pub(crate) mod bombs {
    /// A binary plist of `levels` arrays, each holding the next one twice: about 6 bytes per
    /// level on disk, 2^levels leaves once expanded. `levels` is at most 254.
    pub(crate) fn shared_references(levels: usize) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..levels {
            offsets.push(out.len());
            let next = u8::try_from(i + 1).expect("at most 254 levels");
            out.extend([0xa2, next, next]);
        }
        offsets.push(out.len());
        out.extend([0x51, b'x']);
        let table = out.len();
        for o in &offsets {
            out.extend(u16::try_from(*o).expect("small").to_be_bytes());
        }
        out.extend([0; 6]);
        out.extend([2, 1]);
        out.extend((offsets.len() as u64).to_be_bytes());
        out.extend(0u64.to_be_bytes());
        out.extend((table as u64).to_be_bytes());
        out
    }

    /// An XML plist of `depth` nested empty arrays.
    pub(crate) fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut doc =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">");
        doc.push_str(&"<array>".repeat(depth));
        doc.push_str(&"</array>".repeat(depth));
        doc.push_str("</plist>\n");
        doc.into_bytes()
    }
}

#[cfg(test)]
#[path = "bounded_plist_tests.rs"]
mod tests;
