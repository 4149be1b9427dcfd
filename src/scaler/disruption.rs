//! `maxDisruption`: how many workers one scale-down may remove.
//!
//! Accepts exactly what the CRD schema accepts (`^([0-9]+|([0-9]|[1-9][0-9]|100)%)$`, or a
//! non-negative integer): a count ("2", 2) or a percentage of the current workers from 0% to 100%
//! ("10%"), which rounds up like practo's `intstr.GetValueFromIntOrPercent(.., roundUp=true)`.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::spec_error::SpecError;

/// How many workers one scale-down may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxDisruption {
    /// At most this many workers.
    Count(u32),
    /// At most this percentage of the current workers, rounded up.
    Percent(u32),
}

impl Default for MaxDisruption {
    /// practo's `--wpa-default-max-disruption` default: 100%.
    fn default() -> Self {
        MaxDisruption::Percent(100)
    }
}

impl MaxDisruption {
    /// Workers one scale-down may remove when `current` workers run.
    ///
    /// Percent: ceil(p * current / 100). practo computes this in float64; for the values it can
    /// see (p <= 100, current <= i32::MAX, so p * current < 2^53) the integer ceiling is the
    /// same number, without the float.
    pub fn max_disruptable(&self, current: i32) -> i64 {
        let current = u64::try_from(current).unwrap_or(0);
        match *self {
            MaxDisruption::Count(n) => i64::from(n),
            MaxDisruption::Percent(p) => {
                let removable = (u64::from(p) * current).div_ceil(100);
                i64::try_from(removable).unwrap_or(i64::MAX)
            }
        }
    }
}

impl fmt::Display for MaxDisruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxDisruption::Count(n) => write!(f, "{n}"),
            MaxDisruption::Percent(p) => write!(f, "{p}%"),
        }
    }
}

fn invalid(value: &str, reason: &'static str) -> SpecError {
    SpecError::MaxDisruption {
        value: value.to_owned(),
        reason,
    }
}

impl FromStr for MaxDisruption {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(body) = s.strip_suffix('%') {
            // Same shape as the CRD rule: 0-100, no sign, no leading zeros.
            let canonical = !body.is_empty()
                && body.bytes().all(|b| b.is_ascii_digit())
                && (body == "0" || !body.starts_with('0'));
            if !canonical {
                return Err(invalid(
                    s,
                    "a percentage must be 0% to 100% without leading zeros",
                ));
            }
            return match body.parse::<u32>() {
                Ok(p) if p <= 100 => Ok(MaxDisruption::Percent(p)),
                _ => Err(invalid(s, "a percentage must be 0% to 100%")),
            };
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                s,
                "expected a non-negative count like \"2\" or a percentage like \"10%\"",
            ));
        }
        // A count beyond u32 means "no limit" for any real Deployment: saturate. (practo would
        // wrap it into an int32; the CRD pattern `[0-9]+` lets such strings through.)
        // `s` is all digits here, so a parse error can only be an overflow.
        let count = s
            .parse::<u64>()
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(MaxDisruption::Count(count))
    }
}

impl TryFrom<&IntOrString> for MaxDisruption {
    type Error = SpecError;

    fn try_from(value: &IntOrString) -> Result<Self, Self::Error> {
        match value {
            IntOrString::Int(n) => u32::try_from(*n)
                .map(MaxDisruption::Count)
                .map_err(|_| invalid(&n.to_string(), "a count must not be negative")),
            IntOrString::String(s) => s.parse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_percentages() {
        let cases = [
            ("0", MaxDisruption::Count(0)),
            ("000", MaxDisruption::Count(0)),
            ("2", MaxDisruption::Count(2)),
            ("010", MaxDisruption::Count(10)),
            ("4294967295", MaxDisruption::Count(u32::MAX)),
            ("99999999999999999999999", MaxDisruption::Count(u32::MAX)),
            ("0%", MaxDisruption::Percent(0)),
            ("10%", MaxDisruption::Percent(10)),
            ("100%", MaxDisruption::Percent(100)),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<MaxDisruption>().ok(), Some(want), "{input}");
        }
    }

    #[test]
    fn rejects_what_the_crd_rejects() {
        for input in [
            "", "%", "-1", "+2", " 2", "2 ", "101%", "010%", "00%", "-10%", "1.5", "10 %", "abc",
            "10%%", "1e3",
        ] {
            let err = input.parse::<MaxDisruption>().err();
            assert!(err.is_some(), "{input:?} should be rejected");
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("maxDisruption"), "{message}");
        }
    }

    #[test]
    fn from_int_or_string() {
        assert_eq!(
            MaxDisruption::try_from(&IntOrString::Int(3)).ok(),
            Some(MaxDisruption::Count(3))
        );
        assert_eq!(
            MaxDisruption::try_from(&IntOrString::String("25%".into())).ok(),
            Some(MaxDisruption::Percent(25))
        );
        assert!(MaxDisruption::try_from(&IntOrString::Int(-1)).is_err());
        assert!(MaxDisruption::try_from(&IntOrString::String("x".into())).is_err());
    }

    #[test]
    fn resolves_against_current_rounding_up() {
        // ceil(10 * 20 / 100) = 2
        assert_eq!(MaxDisruption::Percent(10).max_disruptable(20), 2);
        // ceil(10 * 21 / 100) = ceil(2.1) = 3
        assert_eq!(MaxDisruption::Percent(10).max_disruptable(21), 3);
        // ceil(1 * 1 / 100) = 1: any non-zero percent allows removing one worker
        assert_eq!(MaxDisruption::Percent(1).max_disruptable(1), 1);
        assert_eq!(MaxDisruption::Percent(0).max_disruptable(50), 0);
        assert_eq!(MaxDisruption::Percent(100).max_disruptable(7), 7);
        // ceil(100 * (2^31 - 1) / 100) = 2^31 - 1, no overflow
        assert_eq!(
            MaxDisruption::Percent(100).max_disruptable(i32::MAX),
            i64::from(i32::MAX)
        );
        assert_eq!(MaxDisruption::Count(5).max_disruptable(2), 5);
        assert_eq!(MaxDisruption::Count(5).max_disruptable(-3), 5);
        assert_eq!(MaxDisruption::Percent(50).max_disruptable(-3), 0);
    }

    #[test]
    fn display_round_trips() {
        for md in [MaxDisruption::Count(7), MaxDisruption::Percent(30)] {
            assert_eq!(md.to_string().parse::<MaxDisruption>().ok(), Some(md));
        }
    }
}
