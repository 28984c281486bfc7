//! A minimal ASN.1 DER/BER reader and DER writer for the structures Pomona builds or inspects
//! itself (SCEP attributes, CSR attributes, CMS layouts). Cryptography stays with OpenSSL.

/// An ASN.1 element: tag byte and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The identifier octet (low tag numbers only).
    pub tag: u8,
    /// The content octets (for indefinite lengths, without the end-of-contents marker).
    pub value: &'a [u8],
    /// The whole encoding, header included.
    pub raw: &'a [u8],
}

/// Errors reading DER/BER.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerError {
    /// The input ends inside an element.
    #[error("ASN.1 input is truncated")]
    Truncated,
    /// An encoding this reader does not accept.
    #[error("unsupported ASN.1 encoding: {0}")]
    Unsupported(&'static str),
    /// A different element was expected.
    #[error("expected {expected}, found tag 0x{found:02x}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// The tag found.
        found: u8,
    },
}

/// Deepest nesting of indefinite-length elements accepted (bounds recursion on hostile input).
const MAX_DEPTH: usize = 64;

/// Tag: SEQUENCE.
pub const SEQUENCE: u8 = 0x30;
/// Tag: SET.
pub const SET: u8 = 0x31;
/// Tag: OBJECT IDENTIFIER.
pub const OID: u8 = 0x06;
/// Tag: OCTET STRING.
pub const OCTET_STRING: u8 = 0x04;
/// Tag: PrintableString.
pub const PRINTABLE_STRING: u8 = 0x13;
/// Tag: INTEGER.
pub const INTEGER: u8 = 0x02;
/// Tag: NULL.
pub const NULL: u8 = 0x05;

impl<'a> Tlv<'a> {
    /// Read one element from the front of `input`; returns it and the rest.
    pub fn read(input: &'a [u8]) -> Result<(Self, &'a [u8]), DerError> {
        Self::read_nested(input, 0)
    }

    fn read_nested(input: &'a [u8], depth: usize) -> Result<(Self, &'a [u8]), DerError> {
        if depth > MAX_DEPTH {
            return Err(DerError::Unsupported("nesting deeper than 64 levels"));
        }
        let tag = *input.first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::Unsupported("high tag number"));
        }
        let first = *input.get(1).ok_or(DerError::Truncated)?;
        if first == 0x80 {
            if tag & 0x20 == 0 {
                return Err(DerError::Unsupported("indefinite length on a primitive"));
            }
            // Indefinite length: children until an end-of-contents marker.
            let body = &input[2..];
            let mut rest = body;
            loop {
                if rest.len() >= 2 && rest[0] == 0 && rest[1] == 0 {
                    let used = body.len() - rest.len();
                    let value = &body[..used];
                    let total = 2 + used + 2;
                    return Ok((
                        Self {
                            tag,
                            value,
                            raw: &input[..total],
                        },
                        &input[total..],
                    ));
                }
                let (_, r) = Tlv::read_nested(rest, depth + 1)?;
                rest = r;
            }
        }
        let (len, header) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n > 4 {
                return Err(DerError::Unsupported("length over 4 bytes"));
            }
            let bytes = input.get(2..2 + n).ok_or(DerError::Truncated)?;
            (
                bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
                2 + n,
            )
        };
        let end = header.checked_add(len).ok_or(DerError::Truncated)?;
        let value = input.get(header..end).ok_or(DerError::Truncated)?;
        Ok((
            Self {
                tag,
                value,
                raw: &input[..end],
            },
            &input[end..],
        ))
    }

    /// Read exactly one element with tag `tag` from `input`, ignoring trailing bytes.
    pub fn expect(
        input: &'a [u8],
        tag: u8,
        what: &'static str,
    ) -> Result<(Self, &'a [u8]), DerError> {
        let (t, rest) = Self::read(input)?;
        if t.tag != tag {
            return Err(DerError::Unexpected {
                expected: what,
                found: t.tag,
            });
        }
        Ok((t, rest))
    }

    /// The children of a constructed element.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, DerError> {
        let mut out = Vec::new();
        let mut rest = self.value;
        while !rest.is_empty() {
            let (t, r) = Tlv::read(rest)?;
            out.push(t);
            rest = r;
        }
        Ok(out)
    }
}

/// Encode a length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encode an element with `tag` around `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Encode a constructed element from already-encoded children.
pub fn constructed(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &children.concat())
}

/// Encode a SET OF with its elements sorted as DER requires.
pub fn set_of(mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    tlv(SET, &elements.concat())
}

/// Encode an OBJECT IDENTIFIER from its dotted form (panics on a malformed literal).
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().expect("numeric OID arc"))
        .collect();
    assert!(arcs.len() >= 2, "OID needs two arcs");
    let mut body = Vec::new();
    encode_arc(&mut body, arcs[0] * 40 + arcs[1]);
    for a in &arcs[2..] {
        encode_arc(&mut body, *a);
    }
    tlv(OID, &body)
}

fn encode_arc(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        tmp.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    tmp.reverse();
    out.extend_from_slice(&tmp);
}

/// Encode a small non-negative INTEGER.
pub fn integer(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut body = bytes[skip..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    tlv(INTEGER, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_definite_and_indefinite() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        let (t, rest) = Tlv::read(&der).unwrap();
        assert_eq!((t.tag, rest.len()), (0x30, 0));
        assert_eq!(t.children().unwrap()[0].value, [5]);
        let ber = [0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00, 0xff];
        let (t, rest) = Tlv::read(&ber).unwrap();
        assert_eq!(t.value, [0x02, 0x01, 0x05]);
        assert_eq!(rest, [0xff]);
        assert_eq!(Tlv::read(&[0x30, 0x05, 0x02]), Err(DerError::Truncated));
        assert_eq!(
            Tlv::read(&[0x30, 0x80, 0x02, 0x01]),
            Err(DerError::Truncated)
        );
        let hostile: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 10_000)
            .flatten()
            .collect();
        assert!(matches!(Tlv::read(&hostile), Err(DerError::Unsupported(_))));
    }

    #[test]
    fn writes() {
        assert_eq!(
            oid("1.2.840.113549.1.7.1"),
            [
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01
            ]
        );
        assert_eq!(integer(0), [0x02, 0x01, 0x00]);
        assert_eq!(integer(128), [0x02, 0x02, 0x00, 0x80]);
        let long = tlv(OCTET_STRING, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(Tlv::read(&long).unwrap().0.value.len(), 300);
        assert_eq!(set_of(vec![vec![2], vec![1]]), [0x31, 0x02, 1, 2]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok((t, _)) = Tlv::read(&bytes) {
                let _ = t.children();
            }
        }
    }
}
