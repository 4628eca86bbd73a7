//! Money and credits. Inside, every amount is an `i64` of minor units (cents for USD); JSON shows
//! major units as numbers, per the contract. Conversions live here and nowhere else.

use std::fmt;

/// A lowercase ISO 4217 code such as `usd`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

/// Currencies whose minor unit is the major unit (Stripe's zero-decimal list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies Stripe counts in thousandths.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

impl Currency {
    /// Parses a three-letter code, any case; `None` for anything else.
    pub fn parse(code: &str) -> Option<Self> {
        let code = code.trim();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Some(Self(code.to_ascii_lowercase()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of decimal places between minor and major units.
    pub fn exponent(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.0.as_str()) {
            0
        } else if THREE_DECIMAL.contains(&self.0.as_str()) {
            3
        } else {
            2
        }
    }

    /// Minor units shown as a JSON number of major units (`500` USD → `5.0`).
    pub fn to_major(&self, minor: i64) -> serde_json::Value {
        let scale = 10_i64.pow(self.exponent());
        if minor % scale == 0 {
            serde_json::Value::from((minor / scale) as f64)
        } else {
            // Formatting through a decimal string keeps e.g. 0.1 exact instead of 0.1000000001.
            let sign = if minor < 0 { "-" } else { "" };
            let abs = minor.unsigned_abs();
            let scale = scale.unsigned_abs();
            let text = format!(
                "{sign}{}.{:0width$}",
                abs / scale,
                abs % scale,
                width = self.exponent() as usize
            );
            text.parse::<f64>()
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null)
        }
    }

    /// Parses a JSON number of major units into minor units. Refuses non-numbers, values that are
    /// finer than the minor unit, and anything beyond `max_minor`.
    pub fn parse_major(
        &self,
        value: &serde_json::Value,
        max_minor: i64,
    ) -> Result<i64, AmountError> {
        let number = value.as_number().ok_or(AmountError::NotANumber)?;
        // serde_json keeps the literal's digits only through its string form.
        let text = number.to_string();
        let (mantissa, exp10) = split_exponent(&text).ok_or(AmountError::NotANumber)?;
        let zero = mantissa.bytes().all(|b| matches!(b, b'0' | b'.' | b'-'));
        if zero {
            return Ok(0);
        }
        if exp10 > 40 {
            return Err(AmountError::TooLarge);
        }
        if exp10 < -40 {
            return Err(AmountError::TooPrecise);
        }
        let (negative, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(AmountError::NotANumber);
        }
        let mut all: String = format!("{int_part}{frac_part}");
        let mut point = int_part.len() as i64 + exp10;
        let wanted = point + i64::from(self.exponent());
        // Pad or trim so that `all[..wanted]` is the minor-unit integer.
        if wanted < 0 {
            all.insert_str(0, &"0".repeat(wanted.unsigned_abs() as usize));
            point += -wanted;
        }
        let wanted = point + i64::from(self.exponent());
        let wanted = usize::try_from(wanted).map_err(|_| AmountError::TooLarge)?;
        if wanted > 40 {
            return Err(AmountError::TooLarge);
        }
        while all.len() < wanted {
            all.push('0');
        }
        let (whole, rest) = all.split_at(wanted);
        if rest.bytes().any(|b| b != b'0') {
            return Err(AmountError::TooPrecise);
        }
        let whole = whole.trim_start_matches('0');
        let magnitude: i64 = if whole.is_empty() {
            0
        } else if whole.len() > 18 {
            return Err(AmountError::TooLarge);
        } else {
            whole.parse().map_err(|_| AmountError::NotANumber)?
        };
        if magnitude > max_minor {
            return Err(AmountError::TooLarge);
        }
        Ok(if negative { -magnitude } else { magnitude })
    }
}

fn split_exponent(text: &str) -> Option<(&str, i64)> {
    match text.find(['e', 'E']) {
        None => Some((text, 0)),
        Some(at) => {
            let exp = text[at + 1..].parse::<i64>().ok()?;
            Some((&text[..at], exp))
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an amount in a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a number")]
    NotANumber,
    #[error("amount is finer than the currency's smallest unit")]
    TooPrecise,
    #[error("amount is too large")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn currency_codes_are_lowercased_and_checked() {
        assert_eq!(usd().as_str(), "usd");
        assert!(Currency::parse("us").is_none());
        assert!(Currency::parse("u$d").is_none());
        assert_eq!(Currency::parse("jpy").unwrap().exponent(), 0);
    }

    #[test]
    fn minor_units_show_as_major_numbers() {
        assert_eq!(usd().to_major(500), json!(5.0));
        assert_eq!(usd().to_major(1999), json!(19.99));
        assert_eq!(usd().to_major(-10), json!(-0.1));
        assert_eq!(Currency::parse("jpy").unwrap().to_major(500), json!(500.0));
    }

    #[test]
    fn major_numbers_parse_to_exact_minor_units() {
        let max = 100_000_000;
        assert_eq!(usd().parse_major(&json!(5), max), Ok(500));
        assert_eq!(usd().parse_major(&json!(0.1), max), Ok(10));
        assert_eq!(usd().parse_major(&json!(19.99), max), Ok(1999));
        assert_eq!(usd().parse_major(&json!(-2.5), max), Ok(-250));
        assert_eq!(usd().parse_major(&json!(1e2), max), Ok(10000));
        assert_eq!(
            usd().parse_major(&json!(0.001), max),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(
            usd().parse_major(&json!("5"), max),
            Err(AmountError::NotANumber)
        );
        assert_eq!(
            usd().parse_major(&json!(1e300), max),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            usd().parse_major(&json!(2_000_000), max),
            Err(AmountError::TooLarge)
        );
    }
}
