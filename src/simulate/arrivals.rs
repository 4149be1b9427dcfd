//! Arrival traces for `simulate compare`: one task per row, when it was queued and how long
//! it runs once a worker starts it.
//!
//! CSV with a header row: `arrival` (seconds from the start, non-decreasing) and `duration`
//! (seconds, > 0), in either order. Lines starting with `#` are comments (the shipped traces
//! name the command that generated them there). Every problem is reported with its line (the
//! file's own line number, comments included) and column; nothing is simulated from a trace
//! with an error.

use std::io::{Read, Write};

/// One task of an arrival trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Task {
    /// Seconds since the start of the trace when the task was queued.
    pub arrival: f64,
    /// Seconds the task runs once a worker starts it.
    pub duration: f64,
}

/// Why an arrival trace cannot be used. Line numbers are the file's, header and comments
/// included.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArrivalsError {
    #[error("arrivals: cannot read the CSV: {0}")]
    Csv(String),
    #[error("arrivals line {line}: unknown column `{column}` (known: arrival, duration)")]
    UnknownColumn { line: u64, column: String },
    #[error("arrivals line {line}: column `{column}` appears twice")]
    DuplicateColumn { line: u64, column: String },
    #[error("arrivals line {line}: required column `{column}` is missing")]
    MissingColumn { line: u64, column: &'static str },
    #[error("arrivals line {line}, column `{column}`: {problem}")]
    BadValue {
        line: u64,
        column: &'static str,
        problem: String,
    },
    #[error("arrivals line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("arrivals: no header row (expected `arrival,duration`)")]
    NoHeader,
    #[error("arrivals: the trace has a header but no tasks")]
    Empty,
}

const COLUMNS: [&str; 2] = ["arrival", "duration"];

/// Reads a whole arrival trace, or the first error in it.
pub fn read_arrivals(mut input: impl Read) -> Result<Vec<Task>, ArrivalsError> {
    let mut text = Vec::new();
    input
        .read_to_end(&mut text)
        .map_err(|e| ArrivalsError::Csv(e.to_string()))?;
    // The csv crate numbers a first record that follows comments as line 1: count the
    // leading comment (and blank) lines here instead.
    let skipped = text
        .split(|&b| b == b'\n')
        .take_while(|line| line.first() == Some(&b'#') || line.iter().all(u8::is_ascii_whitespace))
        .count();
    let header_line = u64::try_from(skipped).unwrap_or(u64::MAX).saturating_add(1);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_slice());
    let mut records = reader.records();
    // The header is read as a record so that its line number is known even after comments.
    let header = match records.next() {
        None => return Err(ArrivalsError::NoHeader),
        Some(record) => record.map_err(|e| ArrivalsError::Csv(e.to_string()))?,
    };
    let mut position: [Option<usize>; 2] = [None; 2];
    for (index, name) in header.iter().enumerate() {
        let known = COLUMNS.iter().position(|c| *c == name).ok_or_else(|| {
            ArrivalsError::UnknownColumn {
                line: header_line,
                column: name.to_string(),
            }
        })?;
        if position[known].is_some() {
            return Err(ArrivalsError::DuplicateColumn {
                line: header_line,
                column: name.to_string(),
            });
        }
        position[known] = Some(index);
    }
    let (Some(arrival_at), Some(duration_at)) = (position[0], position[1]) else {
        let missing = if position[0].is_none() { 0 } else { 1 };
        return Err(ArrivalsError::MissingColumn {
            line: header_line,
            column: COLUMNS[missing],
        });
    };

    let mut tasks = Vec::new();
    let mut previous = f64::NEG_INFINITY;
    for record in records {
        let record = record.map_err(|e| ArrivalsError::Csv(e.to_string()))?;
        let line = line_of(&record);
        if record.len() != header.len() {
            return Err(ArrivalsError::FieldCount {
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        let bad = |column: usize, problem: String| ArrivalsError::BadValue {
            line,
            column: COLUMNS[column],
            problem,
        };
        let arrival =
            parse_seconds(record.get(arrival_at).unwrap_or(""), false).map_err(|p| bad(0, p))?;
        if arrival < previous {
            return Err(bad(
                0,
                format!("arrivals must not go backwards ({arrival} after {previous})"),
            ));
        }
        previous = arrival;
        let duration =
            parse_seconds(record.get(duration_at).unwrap_or(""), true).map_err(|p| bad(1, p))?;
        tasks.push(Task { arrival, duration });
    }
    if tasks.is_empty() {
        return Err(ArrivalsError::Empty);
    }
    Ok(tasks)
}

fn line_of(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// Seconds: finite, >= 0, and > 0 when `positive` (a task runs for some time).
fn parse_seconds(value: &str, positive: bool) -> Result<f64, String> {
    if value.is_empty() {
        return Err("a value is required".to_string());
    }
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        Ok(s) if s == 0.0 && !positive => Ok(0.0),
        _ if positive => Err(format!("expected seconds > 0, got `{value}`")),
        _ => Err(format!("expected seconds >= 0, got `{value}`")),
    }
}

/// Writes a trace that [`read_arrivals`] reads back exactly: `comments` first (one `# ` line
/// each), then the header and one row per task, in milliseconds precision (the generator
/// rounds to milliseconds, so nothing is lost).
pub fn write_arrivals(
    tasks: &[Task],
    comments: &[String],
    mut out: impl Write,
) -> std::io::Result<()> {
    for comment in comments {
        writeln!(out, "# {comment}")?;
    }
    writeln!(out, "arrival,duration")?;
    for task in tasks {
        writeln!(out, "{:.3},{:.3}", task.arrival, task.duration)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Task>, ArrivalsError> {
        read_arrivals(text.as_bytes())
    }

    #[test]
    fn reads_columns_in_any_order_with_comments() {
        let tasks = read("# made by hand\n#second comment\nduration,arrival\n2.5,0\n3,0\n1,4.25\n")
            .expect("valid");
        assert_eq!(
            tasks,
            vec![
                Task {
                    arrival: 0.0,
                    duration: 2.5
                },
                Task {
                    arrival: 0.0,
                    duration: 3.0
                },
                Task {
                    arrival: 4.25,
                    duration: 1.0
                },
            ]
        );
    }

    #[test]
    fn errors_name_the_files_line_and_the_column() {
        // Line numbers count the comment lines: the bad row is the file's fifth line.
        let err = read("# c\n# c\narrival,duration\n0,1\n1,-2\n").expect_err("negative");
        assert_eq!(
            err.to_string(),
            "arrivals line 5, column `duration`: expected seconds > 0, got `-2`"
        );
        let err = read("arrival,duration\n3,1\n2,1\n").expect_err("backwards");
        assert_eq!(
            err.to_string(),
            "arrivals line 3, column `arrival`: arrivals must not go backwards (2 after 3)"
        );
        let err = read("arrival,duration\nNaN,1\n").expect_err("NaN");
        assert!(
            matches!(
                err,
                ArrivalsError::BadValue {
                    line: 2,
                    column: "arrival",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("arrival,duration\n0,0\n").expect_err("zero duration");
        assert!(
            matches!(
                err,
                ArrivalsError::BadValue {
                    column: "duration",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("arrival,duration\n0,\n").expect_err("empty");
        assert!(err.to_string().contains("a value is required"), "{err}");
    }

    #[test]
    fn header_problems_are_named() {
        assert_eq!(
            read("# x\narrival,duration,queue\n0,1,a\n"),
            Err(ArrivalsError::UnknownColumn {
                line: 2,
                column: "queue".into()
            })
        );
        assert_eq!(
            read("arrival,arrival\n0,1\n"),
            Err(ArrivalsError::DuplicateColumn {
                line: 1,
                column: "arrival".into()
            })
        );
        assert_eq!(
            read("arrival\n0\n"),
            Err(ArrivalsError::MissingColumn {
                line: 1,
                column: "duration"
            })
        );
        assert_eq!(read("# only a comment\n"), Err(ArrivalsError::NoHeader));
        assert_eq!(read("arrival,duration\n"), Err(ArrivalsError::Empty));
        assert_eq!(
            read("arrival,duration\n0,1,2\n"),
            Err(ArrivalsError::FieldCount {
                line: 2,
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn written_traces_read_back_exactly() {
        let tasks = vec![
            Task {
                arrival: 0.0,
                duration: 2.125,
            },
            Task {
                arrival: 12.5,
                duration: 7.999,
            },
        ];
        let mut out = Vec::new();
        write_arrivals(&tasks, &["generated by a test".to_string()], &mut out).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("# generated by a test\narrival,duration\n0.000,2.125\n"),
            "{text}"
        );
        assert_eq!(read(&text).expect("reads back"), tasks);
    }
}
