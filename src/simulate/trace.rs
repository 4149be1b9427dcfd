//! The simulator's input trace: a CSV file with a header row and one row per step.
//!
//! Columns: `t` (seconds from start, non-decreasing, required), `messages` (visible backlog,
//! required), `in_flight` (default 0), `sent_per_minute` (default 0), `idle` (1 when the queue
//! reports its workers idle, else 0; default 0), `busy` (pods whose workers run tasks, as a
//! worker signal reports them; absent or empty: no worker signal). Columns may come in any
//! order. Every problem is
//! reported with its line and column; nothing is simulated from a trace with an error.

use std::io::Read;

/// One step of queue state.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Seconds since the start of the trace.
    pub t: f64,
    pub messages: u64,
    pub in_flight: u64,
    pub sent_per_minute: f64,
    pub idle: bool,
    /// Pods whose workers run tasks; `None`: no worker signal (practo's decision).
    pub busy: Option<u64>,
}

/// Why a trace cannot be used. Line numbers count the header as line 1.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("trace: cannot read the CSV: {0}")]
    Csv(String),
    #[error(
        "trace line 1: unknown column `{column}` (known: t, messages, in_flight, sent_per_minute, idle, busy)"
    )]
    UnknownColumn { column: String },
    #[error("trace line 1: column `{column}` appears twice")]
    DuplicateColumn { column: String },
    #[error("trace line 1: required column `{column}` is missing")]
    MissingColumn { column: &'static str },
    #[error("trace line {line}, column `{column}`: {problem}")]
    BadValue {
        line: u64,
        column: &'static str,
        problem: String,
    },
    #[error("trace line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("trace has a header but no rows")]
    Empty,
}

const COLUMNS: [&str; 6] = [
    "t",
    "messages",
    "in_flight",
    "sent_per_minute",
    "idle",
    "busy",
];

/// Reads a whole trace, or the first error in it.
pub fn read_trace(input: impl Read) -> Result<Vec<TraceRow>, TraceError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| TraceError::Csv(e.to_string()))?
        .clone();
    // position of each known column in the file, by COLUMNS index
    let mut position: [Option<usize>; 6] = [None; 6];
    for (index, name) in headers.iter().enumerate() {
        let known =
            COLUMNS
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| TraceError::UnknownColumn {
                    column: name.to_string(),
                })?;
        if position[known].is_some() {
            return Err(TraceError::DuplicateColumn {
                column: name.to_string(),
            });
        }
        position[known] = Some(index);
    }
    for required in [0, 1] {
        if position[required].is_none() {
            return Err(TraceError::MissingColumn {
                column: COLUMNS[required],
            });
        }
    }

    let mut rows = Vec::new();
    let mut previous_t = f64::NEG_INFINITY;
    for record in reader.records() {
        let record = record.map_err(|e| TraceError::Csv(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != headers.len() {
            return Err(TraceError::FieldCount {
                line,
                expected: headers.len(),
                found: record.len(),
            });
        }
        let field = |column: usize| position[column].and_then(|i| record.get(i));
        let bad = |column: usize, problem: String| TraceError::BadValue {
            line,
            column: COLUMNS[column],
            problem,
        };

        let t = parse_seconds(field(0).unwrap_or("")).map_err(|p| bad(0, p))?;
        if t < previous_t {
            return Err(bad(
                0,
                format!("time goes backwards ({t} after {previous_t})"),
            ));
        }
        previous_t = t;
        let messages = parse_count(field(1).unwrap_or("")).map_err(|p| bad(1, p))?;
        let in_flight = match field(2) {
            Some(v) if !v.is_empty() => parse_count(v).map_err(|p| bad(2, p))?,
            _ => 0,
        };
        let sent_per_minute = match field(3) {
            Some(v) if !v.is_empty() => parse_rate(v).map_err(|p| bad(3, p))?,
            _ => 0.0,
        };
        let idle = match field(4) {
            Some(v) if !v.is_empty() => parse_flag(v).map_err(|p| bad(4, p))?,
            _ => false,
        };
        let busy = match field(5) {
            Some(v) if !v.is_empty() => Some(parse_count(v).map_err(|p| bad(5, p))?),
            _ => None,
        };
        rows.push(TraceRow {
            t,
            messages,
            in_flight,
            sent_per_minute,
            idle,
            busy,
        });
    }
    if rows.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(rows)
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    if value.is_empty() {
        return Err("a value is required".to_string());
    }
    match value.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("expected seconds >= 0, got `{value}`")),
    }
}

fn parse_count(value: &str) -> Result<u64, String> {
    if value.is_empty() {
        return Err("a value is required".to_string());
    }
    value
        .parse::<u64>()
        .map_err(|_| format!("expected a whole number >= 0, got `{value}`"))
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("expected a rate >= 0, got `{value}`")),
    }
}

fn parse_flag(value: &str) -> Result<bool, String> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(format!("expected 0 or 1, got `{value}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<TraceRow>, TraceError> {
        read_trace(text.as_bytes())
    }

    #[test]
    fn reads_all_columns_in_any_order() {
        let rows = read("idle,messages,t,in_flight,sent_per_minute\n0,10,0,2,30.5\n1,0,15,0,0\n")
            .expect("valid trace");
        assert_eq!(
            rows,
            vec![
                TraceRow {
                    t: 0.0,
                    messages: 10,
                    in_flight: 2,
                    sent_per_minute: 30.5,
                    idle: false,
                    busy: None
                },
                TraceRow {
                    t: 15.0,
                    messages: 0,
                    in_flight: 0,
                    sent_per_minute: 0.0,
                    idle: true,
                    busy: None
                },
            ]
        );
    }

    #[test]
    fn optional_columns_default_to_zero() {
        let rows = read("t,messages\n0,5\n1.5,7\n").expect("valid trace");
        assert_eq!(
            rows[1],
            TraceRow {
                t: 1.5,
                messages: 7,
                in_flight: 0,
                sent_per_minute: 0.0,
                idle: false,
                busy: None
            }
        );
    }

    #[test]
    fn unknown_duplicate_and_missing_columns_are_named() {
        assert_eq!(
            read("t,messages,backlog\n0,1,2\n"),
            Err(TraceError::UnknownColumn {
                column: "backlog".into()
            })
        );
        assert_eq!(
            read("t,messages,t\n0,1,2\n"),
            Err(TraceError::DuplicateColumn { column: "t".into() })
        );
        assert_eq!(
            read("t,in_flight\n0,1\n"),
            Err(TraceError::MissingColumn { column: "messages" })
        );
        assert_eq!(
            read("messages\n1\n"),
            Err(TraceError::MissingColumn { column: "t" })
        );
    }

    #[test]
    fn bad_values_name_line_and_column() {
        let err = read("t,messages\n0,1\n5,-3\n").expect_err("negative count");
        assert_eq!(
            err.to_string(),
            "trace line 3, column `messages`: expected a whole number >= 0, got `-3`"
        );
        let err = read("t,messages,idle\n0,1,yes\n").expect_err("bad flag");
        assert!(
            matches!(
                err,
                TraceError::BadValue {
                    line: 2,
                    column: "idle",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("t,messages\nNaN,1\n").expect_err("NaN time");
        assert!(
            matches!(
                err,
                TraceError::BadValue {
                    line: 2,
                    column: "t",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("t,messages,sent_per_minute\n0,1,inf\n").expect_err("infinite rate");
        assert!(
            matches!(
                err,
                TraceError::BadValue {
                    column: "sent_per_minute",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("t,messages\n0,\n").expect_err("empty required");
        assert!(
            matches!(
                err,
                TraceError::BadValue {
                    column: "messages",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn time_must_not_go_backwards() {
        let err = read("t,messages\n10,1\n10,2\n9,3\n").expect_err("backwards");
        assert!(
            matches!(
                err,
                TraceError::BadValue {
                    line: 4,
                    column: "t",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn ragged_rows_and_empty_traces_are_errors() {
        assert_eq!(
            read("t,messages\n0,1,2\n"),
            Err(TraceError::FieldCount {
                line: 2,
                expected: 2,
                found: 3
            })
        );
        assert_eq!(read("t,messages\n"), Err(TraceError::Empty));
        assert!(matches!(read(""), Err(TraceError::MissingColumn { .. })));
    }
}
