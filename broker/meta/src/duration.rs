//! ISO-8601 durations as Knative's `DeliverySpec` writes them (`PT0.2S`, `PT30S`, `P1DT2H`).
//!
//! Accepted: an upper-case `P`, then any of weeks `nW` and days `nD`, then optionally `T`
//! followed by any of hours `nH`, minutes `nM` and seconds `n[.n]S`, each at most once and in
//! that order, with at least one component overall. Weeks may be combined with the other
//! components (ISO 8601-1 alone has `PnW` standalone; ISO 8601-2 and Knative's parser allow
//! the combination), and seconds may carry up to nine fractional digits after `.` or `,`.
//!
//! Refused, each with its own message:
//! - years and months: they have no fixed length, so a delivery timeout or backoff in months
//!   would be ambiguous;
//! - negative durations (`-PT1S`, `PT-1S`): no delivery setting means anything negative;
//! - lower-case designators (`pt30s`): ISO 8601 designators are upper-case and Knative's
//!   parser (`rickb777/date/period`) refuses a lower-case `p`, so a spec accepted here also
//!   applies on Knative;
//! - an empty `P` or `PT`, fractions on anything but seconds, repeated or out-of-order
//!   components, and anything else that is not the grammar above.

use std::time::Duration;

/// Why a text is not an ISO-8601 duration this parser accepts. The `Display` text says what
/// is wrong and what to write instead, and reads well after "'…' is not a valid ISO-8601
/// duration: " (callers quote the offending value themselves).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("the text is empty: write e.g. PT30S")]
    Empty,
    /// The text does not start with `P`.
    #[error("it must start with 'P', as in PT30S or P1D")]
    MissingP,
    /// Designators must be upper-case.
    #[error("designators must be upper-case: write '{0}'")]
    LowerCase(String),
    /// A negative duration.
    #[error("negative durations are not allowed")]
    Negative,
    /// Years or months, which have no fixed length.
    #[error("{0} have no fixed length: use weeks (W), days (D), hours (H), minutes (M) or seconds (S)")]
    CalendarUnit(&'static str),
    /// `P` or `T` (the designator given) with nothing after it.
    #[error("nothing follows '{0}': write e.g. PT30S")]
    NoComponents(char),
    /// Anything else that does not follow the grammar.
    #[error("{0}")]
    Malformed(String),
    /// More than `Duration` holds.
    #[error("too long to represent")]
    Overflow,
}

/// Parses an ISO-8601 duration (see the [module documentation](self) for what is accepted).
///
/// ```
/// use std::time::Duration;
/// use switchyard_meta::duration::parse_iso8601_duration;
///
/// assert_eq!(parse_iso8601_duration("PT0.2S"), Ok(Duration::from_millis(200)));
/// assert_eq!(parse_iso8601_duration("P1DT2H"), Ok(Duration::from_secs(26 * 3600)));
/// assert!(parse_iso8601_duration("P1M").is_err());
/// ```
pub fn parse_iso8601_duration(text: &str) -> Result<Duration, DurationError> {
    match parse(text) {
        Ok(duration) => Ok(duration),
        // Say "upper-case" only when that is all that is wrong: `pt30s`, not `px`.
        Err(error) if text.bytes().any(|b| b.is_ascii_lowercase()) => {
            let upper = text.to_ascii_uppercase();
            match parse(&upper) {
                Ok(_) => Err(DurationError::LowerCase(upper)),
                Err(_) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

/// Designators of one part (date or time), in the order they must appear.
struct Part {
    name: &'static str,
    designators: &'static [(u8, u64)],
}

const DATE: Part = Part { name: "date", designators: &[(b'Y', 0), (b'M', 0), (b'W', 7 * 86_400), (b'D', 86_400)] };
const TIME: Part = Part { name: "time", designators: &[(b'H', 3_600), (b'M', 60), (b'S', 1)] };

fn parse(text: &str) -> Result<Duration, DurationError> {
    let rest = match text.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => return Err(DurationError::Negative),
        Some(b'P') => &text[1..],
        Some(_) => return Err(DurationError::MissingP),
    };
    if rest.is_empty() {
        return Err(DurationError::NoComponents('P'));
    }
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut total = parse_part(date, &DATE)?;
    if let Some(time) = time {
        if time.is_empty() {
            return Err(DurationError::NoComponents('T'));
        }
        total = total.checked_add(parse_part(time, &TIME)?).ok_or(DurationError::Overflow)?;
    }
    Ok(total)
}

/// Parses the components of one part; an empty part is zero (`PT1S` has an empty date part).
fn parse_part(mut text: &str, part: &Part) -> Result<Duration, DurationError> {
    let mut total = Duration::ZERO;
    // Index in `part.designators` after the last one seen: enforces order and uniqueness.
    let mut next = 0;
    while !text.is_empty() {
        if text.starts_with(['-', '+']) {
            return Err(if text.starts_with('-') {
                DurationError::Negative
            } else {
                DurationError::Malformed("a sign is not allowed".to_owned())
            });
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = text.split_at(digits);
        if whole.is_empty() {
            // `after` is all of `text` here, which is not empty.
            return Err(DurationError::Malformed(match after.chars().next().unwrap_or_default() {
                'T' => "'T' appears more than once".to_owned(),
                c if c.is_ascii_uppercase() => format!("'{c}' needs a number before it"),
                c => format!("unexpected '{c}'"),
            }));
        }
        let (fraction, after) = match after.as_bytes().first() {
            Some(b'.' | b',') => {
                let fraction_digits = after[1..].bytes().take_while(u8::is_ascii_digit).count();
                let (fraction, after) = after[1..].split_at(fraction_digits);
                if fraction.is_empty() {
                    return Err(DurationError::Malformed("a decimal separator needs digits after it".to_owned()));
                }
                (Some(fraction), after)
            }
            _ => (None, after),
        };
        let Some(&designator) = after.as_bytes().first() else {
            return Err(DurationError::Malformed(format!("'{whole}' has no unit designator")));
        };
        let Some(index) = part.designators.iter().position(|&(d, _)| d == designator) else {
            let c = after.chars().next().unwrap_or_default();
            return Err(DurationError::Malformed(if designator == b'T' {
                "'T' appears more than once".to_owned()
            } else {
                format!("'{c}' is not a {} designator", part.name)
            }));
        };
        match (part.name, designator) {
            ("date", b'Y') => return Err(DurationError::CalendarUnit("years (Y)")),
            ("date", b'M') => return Err(DurationError::CalendarUnit("months (M before T)")),
            _ => {}
        }
        if index < next {
            return Err(DurationError::Malformed(format!(
                "'{}' is repeated or out of order (the order is W D T H M S)",
                designator as char
            )));
        }
        next = index + 1;
        let unit = part.designators[index].1;
        let seconds = whole.parse::<u64>().map_err(|_| DurationError::Overflow)?;
        let mut component = Duration::from_secs(seconds.checked_mul(unit).ok_or(DurationError::Overflow)?);
        if let Some(fraction) = fraction {
            if designator != b'S' {
                return Err(DurationError::Malformed("only seconds may have a fraction".to_owned()));
            }
            if fraction.len() > 9 {
                return Err(DurationError::Malformed("at most 9 fractional digits (nanoseconds)".to_owned()));
            }
            // Right-pad to nanoseconds: "2" is 200 000 000 ns.
            let nanos =
                fraction.parse::<u32>().map_err(|_| DurationError::Overflow)? * 10u32.pow(9 - fraction.len() as u32);
            component = component.checked_add(Duration::from_nanos(u64::from(nanos))).ok_or(DurationError::Overflow)?;
        }
        total = total.checked_add(component).ok_or(DurationError::Overflow)?;
        text = &after[1..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn valid_durations() {
        let cases = [
            ("PT30S", secs(30)),
            ("PT0.2S", Duration::from_millis(200)),
            ("PT0,2S", Duration::from_millis(200)),
            ("PT0S", Duration::ZERO),
            ("PT5M", secs(300)),
            ("PT2H", secs(7_200)),
            ("P1D", secs(86_400)),
            ("P2W", secs(14 * 86_400)),
            ("P1W2D", secs(9 * 86_400)),
            ("P1DT2H30M0.5S", Duration::from_millis((86_400 + 2 * 3_600 + 30 * 60) * 1_000 + 500)),
            ("PT1H1S", secs(3_601)),
            ("PT90M", secs(5_400)),
            ("PT0.000000001S", Duration::from_nanos(1)),
            ("PT1.123456789S", Duration::new(1, 123_456_789)),
            ("PT007S", secs(7)),
            ("P0D", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_iso8601_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn invalid_durations() {
        use DurationError::*;
        let malformed = |text: &str| Malformed(text.to_owned());
        let cases = [
            ("", Empty),
            ("30s", MissingP),
            ("30", MissingP),
            (" PT1S", MissingP),
            ("T1S", MissingP),
            ("pt30s", LowerCase("PT30S".to_owned())),
            ("Pt0.2s", LowerCase("PT0.2S".to_owned())),
            ("p1d", LowerCase("P1D".to_owned())),
            ("-PT1S", Negative),
            ("PT-1S", Negative),
            ("P-1D", Negative),
            ("P1Y", CalendarUnit("years (Y)")),
            ("P1M", CalendarUnit("months (M before T)")),
            ("P1Y2M3DT4H", CalendarUnit("years (Y)")),
            ("P", NoComponents('P')),
            ("PT", NoComponents('T')),
            ("P1DT", NoComponents('T')),
            ("PT+1S", malformed("a sign is not allowed")),
            ("PT1", malformed("'1' has no unit designator")),
            ("PTS", malformed("'S' needs a number before it")),
            ("PT.5S", malformed("unexpected '.'")),
            ("PT1.S", malformed("a decimal separator needs digits after it")),
            ("PT1.5M", malformed("only seconds may have a fraction")),
            ("P1.5D", malformed("only seconds may have a fraction")),
            ("PT0.1234567891S", malformed("at most 9 fractional digits (nanoseconds)")),
            ("PT1S1M", malformed("'M' is repeated or out of order (the order is W D T H M S)")),
            ("PT1S2S", malformed("'S' is repeated or out of order (the order is W D T H M S)")),
            ("P1D1W", malformed("'W' is repeated or out of order (the order is W D T H M S)")),
            ("P1H", malformed("'H' is not a date designator")),
            ("PT1D", malformed("'D' is not a time designator")),
            ("PT1W", malformed("'W' is not a time designator")),
            ("PT1H T1S", malformed("unexpected ' '")),
            ("PT1ST", malformed("'T' appears more than once")),
            ("PT1Sx", malformed("unexpected 'x'")),
            ("PT1S ", malformed("unexpected ' '")),
            ("PT1é", malformed("'é' is not a time designator")),
            ("PT1 S", malformed("' ' is not a time designator")),
            ("PT99999999999999999999S", Overflow),
            ("P99999999999999W", Overflow),
            ("P30000000000000DT99999999999999999H", Overflow),
            ("P100000000000000DT3000000000000000H", Overflow),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_iso8601_duration(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn messages_say_what_to_write() {
        let message = |text: &str| parse_iso8601_duration(text).unwrap_err().to_string();
        assert!(message("P1M").contains("no fixed length"));
        assert!(message("pt30s").contains("'PT30S'"));
        assert!(message("PT").contains("PT30S"));
    }
}
