//! Money and credits. Inside, every amount is an `i64` of minor units (cents for USD); JSON shows
//! major units as numbers, per the contract. Conversions live here and nowhere else.

use std::fmt;

/// A lowercase ISO 4217 code such as `usd`.
/// Credits, in minor units of the credit currency: what a balance holds, a purchase grants
/// and a spend takes. Never added to or compared with `Money` (the types refuse it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(pub i64);

/// Money, in minor units of a currency: what a payment charged or a refund gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(pub i64);

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
    /// US dollars, the default currency.
    pub fn usd() -> Self {
        Self("usd".to_owned())
    }

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
    /// Minor units as text of major units with all the currency's decimals (`300` → `3.00`).
    pub fn format_major(&self, minor: i64) -> String {
        let exponent = self.exponent() as usize;
        let scale = 10_u64.pow(self.exponent());
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if exponent == 0 {
            return format!("{sign}{abs}");
        }
        format!("{sign}{}.{:0exponent$}", abs / scale, abs % scale)
    }

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

    /// Parses the text of a JSON number literal of major units (its own digits, never through
    /// a float) into minor units. Refuses anything that is not a JSON number, values finer than
    /// the minor unit, and anything beyond `max_minor`.
    pub fn parse_major(&self, literal: &str, max_minor: i64) -> Result<i64, AmountError> {
        parse_scaled(literal, self.exponent(), max_minor)
    }
}

/// Parses the text of a JSON number literal into units of 10^-`exponent` (its own digits, never
/// through a float): finer than that is refused, and so is anything beyond `max`.
pub fn parse_scaled(literal: &str, exponent: u32, max_minor: i64) -> Result<i64, AmountError> {
    let number = JsonNumber::parse(literal.trim()).ok_or(AmountError::NotANumber)?;
    if number.digits.bytes().all(|b| b == b'0') {
        return Ok(0);
    }
    // The value is digits × 10^(scale); in minor units, × 10^(scale + exponent).
    let shift = number
        .scale
        .checked_add(i64::from(exponent))
        .ok_or(AmountError::TooLarge)?;
    let digits = number.digits.trim_start_matches('0');
    let magnitude = if shift >= 0 {
        if shift > 18 || digits.len() as i64 + shift > 18 {
            return Err(AmountError::TooLarge);
        }
        let base: i64 = digits.parse().map_err(|_| AmountError::TooLarge)?;
        base.checked_mul(10_i64.pow(shift as u32))
            .ok_or(AmountError::TooLarge)?
    } else {
        // Dropping -shift digits must drop only zeros.
        let drop = usize::try_from(shift.unsigned_abs()).map_err(|_| AmountError::TooPrecise)?;
        if drop >= digits.len() {
            return Err(AmountError::TooPrecise);
        }
        let (kept, dropped) = digits.split_at(digits.len() - drop);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(AmountError::TooPrecise);
        }
        if kept.len() > 18 {
            return Err(AmountError::TooLarge);
        }
        kept.parse().map_err(|_| AmountError::TooLarge)?
    };
    if magnitude > max_minor {
        return Err(AmountError::TooLarge);
    }
    Ok(if number.negative {
        -magnitude
    } else {
        magnitude
    })
}

/// A JSON number literal taken apart: sign, all its digits, and the power of ten they are scaled
/// by (`12.5e1` → `125` × 10^0).
struct JsonNumber {
    negative: bool,
    digits: String,
    scale: i64,
}

impl JsonNumber {
    /// Follows RFC 8259's number grammar exactly; `None` for anything else.
    fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((int_part, frac)) => (int_part, Some(frac)),
            None => (mantissa, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || (int_part.len() > 1 && int_part.starts_with('0')) {
            return None;
        }
        if frac_part.is_some_and(|f| !all_digits(f)) {
            return None;
        }
        let exp: i64 = match exponent {
            None => 0,
            Some(e) => {
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if !all_digits(unsigned) {
                    return None;
                }
                // Leading zeros say nothing (`e-0000000` is `e-0`).
                let unsigned = match unsigned.trim_start_matches('0') {
                    "" => "0",
                    digits => digits,
                };
                // An exponent this long is far outside any amount: saturate, the caller refuses.
                let magnitude: i64 = if unsigned.len() > 6 {
                    1_000_000
                } else {
                    unsigned.parse().ok()?
                };
                if e.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                }
            }
        };
        let frac = frac_part.unwrap_or("");
        let frac_len = i64::try_from(frac.len()).ok()?;
        Some(Self {
            negative,
            digits: format!("{int_part}{frac}"),
            scale: exp.checked_sub(frac_len)?,
        })
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

    #[test]
    fn an_exponents_leading_zeros_change_nothing() {
        let usd = Currency::usd();
        assert_eq!(usd.parse_major("7e-0000000", 1_000_000), Ok(700));
        let huge = format!("7{}e-0000000", "0".repeat(40));
        assert_eq!(usd.parse_major(&huge, i64::MAX), Err(AmountError::TooLarge));
    }
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
        let parse = |text: &str| usd().parse_major(text, max);
        assert_eq!(parse("5"), Ok(500));
        assert_eq!(parse("0.1"), Ok(10));
        assert_eq!(parse("19.99"), Ok(1999));
        assert_eq!(parse("-2.5"), Ok(-250));
        assert_eq!(parse("1e2"), Ok(10000));
        assert_eq!(parse("1.50E+1"), Ok(1500));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0.001"), Err(AmountError::TooPrecise));
        assert_eq!(parse("\"5\""), Err(AmountError::NotANumber));
        assert_eq!(parse("1e300"), Err(AmountError::TooLarge));
        assert_eq!(parse("1e99999999999"), Err(AmountError::TooLarge));
        assert_eq!(parse("1e-99999999999"), Err(AmountError::TooPrecise));
        assert_eq!(parse("2000000"), Err(AmountError::TooLarge));
        for bad in [
            "", "-", "01", "1.", ".5", "+1", "1e", "NaN", "true", "null", "0x10",
        ] {
            assert_eq!(parse(bad), Err(AmountError::NotANumber), "{bad}");
        }
    }

    #[test]
    fn amounts_are_parsed_from_their_own_digits_never_through_a_float() {
        let max = 100_000_000;
        // Through f64 these became 1.00 and 10.00.
        assert_eq!(
            usd().parse_major("1.0000000000000000001", max),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(
            usd().parse_major("9.999999999999999999", max),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(usd().parse_major("1.0000000000000000000", max), Ok(100));
        assert_eq!(usd().parse_major("1234.5e-1", max), Ok(12345));
        assert_eq!(
            usd().parse_major("1234.56e-1", max),
            Err(AmountError::TooPrecise)
        );
    }
}
