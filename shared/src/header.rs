//! Values of the internal headers the Worker passes to its Durable Objects (the verified identity, the
//! moderator's name): JSON with every non-ASCII character escaped as `\uXXXX`.
//!
//! Display names may hold any Unicode, but an HTTP header value is bytes that runtimes read as Latin-1 or
//! refuse: workerd re-encodes such a value and logs a warning per request, other runtimes throw. Escaped
//! JSON is plain ASCII and decodes back to the same value with any JSON parser.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// `value` as JSON in ASCII only.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(value)?;
    let mut ascii = String::with_capacity(json.len());
    let mut units = [0u16; 2];
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            // Outside ASCII, a character can only be inside a JSON string, where \u escapes are valid.
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(ascii)
}

/// Decodes a value [`encode`] made.
pub fn decode<T: DeserializeOwned>(header: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_unicode_round_trips_through_ascii() {
        let names = ["Ada", "Zoë Ñúñez", "李雷", "👩‍🏫 Ms. K", "quote \" and \\ backslash", ""];
        for name in names {
            let header = encode(name).unwrap();
            assert!(header.is_ascii(), "{header}");
            assert_eq!(decode::<String>(&header).unwrap(), name);
        }
        let nested = serde_json::json!({"name": "Émile 🎓", "rooms": ["math"]});
        let header = encode(&nested).unwrap();
        assert!(header.is_ascii());
        assert_eq!(decode::<serde_json::Value>(&header).unwrap(), nested);
    }
}
