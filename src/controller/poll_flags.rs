//! The providers' poll-interval flags, one per row of the provider table: the flag, its
//! environment variable and its default all come from the row, so a new provider gets its
//! flag without a line here.

use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, value_parser};

use crate::queue::ProviderKind;

/// Seconds between polls, per provider, as the flags set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollFlags {
    seconds: Vec<(ProviderKind, u64)>,
}

impl PollFlags {
    /// The interval of `kind`'s flag (the row's default when the flag is not given).
    pub fn interval(&self, kind: ProviderKind) -> Duration {
        let seconds = self
            .seconds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| *s);
        seconds.map_or(kind.spec().default_interval, Duration::from_secs)
    }
}

/// The flag's name without `--`: also its clap id.
fn id(kind: ProviderKind) -> &'static str {
    kind.spec().interval_flag.trim_start_matches("--")
}

impl FromArgMatches for PollFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let seconds = ProviderKind::all()
            .filter_map(|kind| Some((kind, *matches.get_one::<u64>(id(kind))?)))
            .collect();
        Ok(PollFlags { seconds })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for PollFlags {
    fn augment_args(command: Command) -> Command {
        ProviderKind::all().fold(command, |command, kind| {
            let spec = kind.spec();
            command.arg(
                Arg::new(id(kind))
                    .long(id(kind))
                    .env(spec.interval_env())
                    .default_value(spec.default_interval.as_secs().to_string())
                    .value_parser(value_parser!(u64).range(1..))
                    .help(format!("Seconds between {} polls", spec.name)),
            )
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}
