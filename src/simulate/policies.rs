//! The policies `simulate compare` knows, by name: `practo:<target>`, `keda:<target>`,
//! `maxwait:<seconds>` and `bound` (the offline lower bound, computed rather than
//! simulated).
//!
//! A new policy is one file with a type implementing [`SimPolicy`] plus one arm in
//! [`Choice::parse`] and one in [`build`]; the engine does not change.

use super::context::{PolicyContext, PolicyError};
use super::keda::Keda;
use super::max_wait::MaxWait;
use super::practo::Practo;
use super::view::SimPolicy;

/// One entry of `--policies`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// practo's rule (the project's engine) with this `targetMessagesPerWorker`.
    Practo(i32),
    /// An HPA on KEDA's list-length metric with this AverageValue target.
    Keda(i32),
    /// The controller's sizing on wait time with this `maxWaitSeconds`.
    MaxWait(i32),
    /// The same without the stream term: the backlog alone sizes the pool (a candidate
    /// rule, compared in docs/simulate.md).
    MaxWaitBacklog(i32),
    /// The offline lower bound.
    Bound,
}

impl Choice {
    pub fn parse(item: &str) -> Result<Choice, PolicyError> {
        let item = item.trim();
        let bad = |problem: &str| PolicyError::Parse {
            item: item.to_string(),
            problem: problem.to_string(),
        };
        let target = |value: &str| {
            value
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|t| *t >= 1)
                .ok_or_else(|| bad("the target must be a whole number >= 1"))
        };
        match item.split_once(':') {
            Some(("practo", value)) => Ok(Choice::Practo(target(value)?)),
            Some(("keda", value)) => Ok(Choice::Keda(target(value)?)),
            Some(("maxwait", value)) => Ok(Choice::MaxWait(target(value)?)),
            Some(("maxwait-backlog", value)) => Ok(Choice::MaxWaitBacklog(target(value)?)),
            None if item == "bound" => Ok(Choice::Bound),
            _ => Err(bad("unknown policy")),
        }
    }

    /// A comma-separated list, in order. `NAME:A..B` stands for every whole target from A
    /// to B (`practo:1..12`: the sweep that shows which target meets a wait, at what cost).
    pub fn parse_list(text: &str) -> Result<Vec<Choice>, PolicyError> {
        let mut choices = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once(':') {
                Some((name, range)) if range.contains("..") => {
                    let bad = |problem: &str| PolicyError::Parse {
                        item: item.to_string(),
                        problem: problem.to_string(),
                    };
                    let (low, high) = range.split_once("..").unwrap_or((range, range));
                    let bound = |v: &str| v.trim().parse::<i32>().ok().filter(|t| *t >= 1);
                    let (Some(low), Some(high)) = (bound(low), bound(high)) else {
                        return Err(bad("a range is two whole targets >= 1, as in 2..10"));
                    };
                    if high < low || high - low > 100 {
                        return Err(bad("a range goes up, over at most 100 targets"));
                    }
                    for target in low..=high {
                        choices.push(Choice::parse(&format!("{name}:{target}"))?);
                    }
                }
                _ => choices.push(Choice::parse(item)?),
            }
        }
        if choices.is_empty() {
            return Err(PolicyError::Empty);
        }
        Ok(choices)
    }
}

/// The policy for a choice; `None` for `bound`, which is computed, not simulated.
pub fn build(
    choice: Choice,
    ctx: &PolicyContext<'_>,
) -> Result<Option<Box<dyn SimPolicy>>, PolicyError> {
    Ok(match choice {
        Choice::Practo(target) => Some(Box::new(Practo::new(target, ctx)?)),
        Choice::Keda(target) => Some(Box::new(Keda::new(target, ctx)?)),
        Choice::MaxWait(seconds) => Some(Box::new(MaxWait::new(seconds, ctx)?)),
        Choice::MaxWaitBacklog(seconds) => Some(Box::new(MaxWait::backlog_only(seconds, ctx)?)),
        Choice::Bound => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_errors_name_the_item() {
        assert_eq!(
            Choice::parse_list("practo:2, keda:5,bound"),
            Ok(vec![Choice::Practo(2), Choice::Keda(5), Choice::Bound])
        );
        let err = Choice::parse_list("practo:0").expect_err("zero target");
        assert!(
            err.to_string().contains("`practo:0`: the target must be"),
            "{err}"
        );
        let err = Choice::parse_list("hpa:3").expect_err("unknown");
        assert!(err.to_string().contains("`hpa:3`: unknown policy"), "{err}");
        assert_eq!(Choice::parse_list(" , "), Err(PolicyError::Empty));
        assert_eq!(
            Choice::parse_list("maxwait:30,maxwait-backlog:30"),
            Ok(vec![Choice::MaxWait(30), Choice::MaxWaitBacklog(30)])
        );
        assert_eq!(
            Choice::parse_list("practo:2..4,bound"),
            Ok(vec![
                Choice::Practo(2),
                Choice::Practo(3),
                Choice::Practo(4),
                Choice::Bound
            ])
        );
        let err = Choice::parse_list("practo:4..2").expect_err("downwards");
        assert!(
            err.to_string().contains("`practo:4..2`: a range goes up"),
            "{err}"
        );
        assert!(Choice::parse_list("practo:0..3").is_err());
        assert!(Choice::parse_list("hpa:1..3").is_err());
    }
}
