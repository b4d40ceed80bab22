//! Reading integers the way JSON Schema defines them: `7`, `7.0` and `7e0` are all the integer
//! 7 (a number with no fractional part), so a body valid by the OpenAPI document is never
//! refused for writing a whole number with a decimal point. Query strings carry the same
//! spellings as text.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// Reads a `u32` from a JSON integer, a number with no fractional part, or such a number as
/// text (query strings).
///
/// # Errors
/// A fraction, a negative number or one over `u32::MAX`, naming the value.
pub fn u32_of<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    deserializer.deserialize_any(WholeU32)
}

/// As [`u32_of`], for an optional field (`null` or absent is `None`).
///
/// # Errors
/// As [`u32_of`].
pub fn optional_u32_of<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct Optional;
    impl<'de> Visitor<'de> for Optional {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer from 0 to 4294967295, or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            u32_of(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(Optional)
}

struct WholeU32;

impl Visitor<'_> for WholeU32 {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer from 0 to 4294967295")
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("{v} is over 4294967295")))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("{v} is not an integer from 0 to 4294967295")))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<u32, E> {
        let whole = v.is_finite() && v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v);
        if whole {
            // In range and without a fraction, so the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked just above")]
            Ok(v as u32)
        } else {
            Err(E::custom(format!("{v} is not an integer from 0 to 4294967295")))
        }
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<u32, E> {
        // Only the spellings of a JSON number: no `inf`, `NaN` or a leading `+`.
        let json_like = v.starts_with(|c: char| c.is_ascii_digit() || c == '-')
            && v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
        let refused = || E::custom(format!("{v:?} is not an integer from 0 to 4294967295"));
        if !json_like {
            return Err(refused());
        }
        match (v.parse::<u64>(), v.parse::<f64>()) {
            (Ok(n), _) => self.visit_u64(n),
            (_, Ok(f)) => self.visit_f64(f),
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "super::u32_of")]
        n: u32,
    }

    fn read(json: &str) -> Option<u32> {
        serde_json::from_str::<Holder>(&format!("{{\"n\": {json}}}")).ok().map(|h| h.n)
    }

    #[test]
    fn whole_numbers_in_any_json_spelling_are_integers() {
        assert_eq!(read("7"), Some(7));
        assert_eq!(read("7.0"), Some(7));
        assert_eq!(read("7e0"), Some(7));
        assert_eq!(read("4294967295"), Some(u32::MAX));
        assert_eq!(read("\"50\""), Some(50), "as text, for query strings");
        assert_eq!(read("\"50.0\""), Some(50));
        for bad in ["7.5", "-1", "4294967296", "1e20", "\"+5\"", "\"inf\"", "\"NaN\"", "null", "\"\""] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}
