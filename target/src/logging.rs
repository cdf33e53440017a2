//! The daemon's log filter, changeable at run time: SPDK's log levels and
//! log flags (`log_set_print_level`, `log_set_flag`, ...) mapped onto a
//! reloadable tracing `EnvFilter`.
//!
//! SPDK has two levels: `level` for syslog and `print_level` for stderr.
//! Pollux writes one stream (stderr, which journald takes under systemd),
//! so an event is written when either level lets it through, as SPDK's
//! two sinks together would. SPDK's debug messages are all per component
//! (`SPDK_DEBUGLOG(flag, ...)`): printed only when the component's flag is
//! set *and* the level is DEBUG. The same here: without flags the filter
//! stops at info; a flag turns its components' tracing targets up to the
//! level in force.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The environment variable holding the start-up filter (tracing syntax).
pub const ENV: &str = "POLLUX_LOG";

/// SPDK's log levels, least verbose first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `ERROR`.
    Error,
    /// `WARNING`.
    Warning,
    /// `NOTICE` (tracing has none: it is info).
    Notice,
    /// `INFO`.
    Info,
    /// `DEBUG`.
    Debug,
}

impl Level {
    /// SPDK's names, matched without regard to case as `_parse_log_level`.
    pub fn parse(name: &str) -> Option<Level> {
        [
            Level::Error,
            Level::Warning,
            Level::Notice,
            Level::Info,
            Level::Debug,
        ]
        .into_iter()
        .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// The name SPDK's `log_get_*level` answers with.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    fn directive(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warn",
            Level::Notice | Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn from_tracing(l: Option<tracing::level_filters::LevelFilter>) -> Level {
        use tracing::level_filters::LevelFilter as F;
        match l {
            Some(F::OFF) | Some(F::ERROR) => Level::Error,
            Some(F::WARN) => Level::Warning,
            Some(F::INFO) => Level::Info,
            // DEBUG, TRACE, or per-span filters whose maximum is unknown.
            _ => Level::Debug,
        }
    }
}

/// SPDK's log flags that name a Pollux component, and the tracing targets
/// (module paths) of that component. Sorted by name (`log_get_flags`
/// lists them in order, as SPDK's registration does).
pub const FLAGS: &[(&str, &[&str])] = &[
    ("bdev", &["pollux_graph", "pollux_target::bdev"]),
    ("log_rpc", &["pollux_target::rpc::methods::log"]),
    ("nvme", &["pollux_nvme"]),
    ("nvmf", &["pollux_target::nvmf"]),
    (
        "nvmf_tcp",
        &[
            "pollux_target::nvmf::conn",
            "pollux_target::nvmf::group",
            "pollux_target::nvmf::listener",
            "pollux_nvme::tcp",
        ],
    ),
    (
        "reactor",
        &["pollux_poller::reactor", "pollux_poller::runtime"],
    ),
    ("rpc", &["pollux_target::rpc"]),
    ("thread", &["pollux_poller"]),
    ("vhost", &["pollux_target::vhost"]),
    ("vhost_blk", &["pollux_target::vhost::backend"]),
];

/// What the log RPCs set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    /// SPDK's `level` (syslog).
    pub level: Level,
    /// SPDK's `print_level` (stderr).
    pub print_level: Level,
    /// Flags set, by name (entries of `FLAGS`).
    pub flags: BTreeSet<&'static str>,
}

impl LogState {
    /// The state a start-up filter amounts to: both levels at its most
    /// verbose level, no flags.
    fn from_filter(f: &EnvFilter) -> LogState {
        let l = Level::from_tracing(f.max_level_hint());
        LogState {
            level: l,
            print_level: l,
            flags: BTreeSet::new(),
        }
    }

    /// The tracing directives this state stands for.
    pub fn directives(&self) -> String {
        let level = self.level.max(self.print_level);
        let mut d = level.min(Level::Info).directive().to_owned();
        for (name, targets) in FLAGS {
            if self.flags.contains(name) {
                for t in *targets {
                    d.push_str(&format!(",{t}={}", level.directive()));
                }
            }
        }
        d
    }
}

/// Why a flag could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("no log flag {0:?}")]
pub struct NoSuchFlag(pub String);

struct Logging {
    state: Mutex<LogState>,
    /// Absent when the process did not install the reloadable subscriber
    /// (library users, unit tests): the state is kept but filters nothing.
    reload: Option<reload::Handle<EnvFilter, Registry>>,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

fn logging() -> &'static Logging {
    LOGGING.get_or_init(|| Logging {
        state: Mutex::new(LogState::from_filter(&EnvFilter::new("info"))),
        reload: None,
    })
}

fn lock() -> MutexGuard<'static, LogState> {
    // A poisoned lock still holds a consistent state (plain data).
    logging().state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the process's subscriber: text on stderr through a filter
/// that starts as `POLLUX_LOG` (default `info`) and that the log RPCs
/// replace later.
pub fn init() {
    let filter = EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let state = LogState::from_filter(&filter);
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let _ = LOGGING.set(Logging {
        state: Mutex::new(state),
        reload: Some(handle),
    });
}

/// The levels and flags in force.
pub fn state() -> LogState {
    lock().clone()
}

/// Changes the state with `f` and installs the filter it stands for.
fn update<T>(f: impl FnOnce(&mut LogState) -> T) -> T {
    let mut st = lock();
    let out = f(&mut st);
    if let Some(h) = &logging().reload {
        match EnvFilter::try_new(st.directives()) {
            Ok(filter) => {
                if let Err(e) = h.reload(filter) {
                    tracing::warn!(error = %e, "log filter not replaced");
                }
            }
            // Every directive is built from FLAGS and Level: a bug.
            Err(e) => tracing::error!(error = %e, "log filter not valid"),
        }
    }
    out
}

/// SPDK's `spdk_log_set_level`.
pub fn set_level(l: Level) {
    update(|s| s.level = l);
}

/// SPDK's `spdk_log_set_print_level`.
pub fn set_print_level(l: Level) {
    update(|s| s.print_level = l);
}

/// SPDK's `spdk_log_set_flag` / `spdk_log_clear_flag`: one flag by name,
/// or every flag with `all`.
pub fn set_flag(name: &str, on: bool) -> Result<(), NoSuchFlag> {
    let names: Vec<&'static str> = if name.eq_ignore_ascii_case("all") {
        FLAGS.iter().map(|(n, _)| *n).collect()
    } else {
        let (n, _) = FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| NoSuchFlag(name.to_owned()))?;
        vec![*n]
    };
    update(|s| {
        for n in names {
            if on {
                s.flags.insert(n);
            } else {
                s.flags.remove(n);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(level: Level, print_level: Level, flags: &[&'static str]) -> LogState {
        LogState {
            level,
            print_level,
            flags: flags.iter().copied().collect(),
        }
    }

    #[test]
    fn levels_parse_as_spdk_names_them() {
        assert_eq!(Level::parse("warning"), Some(Level::Warning));
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("Notice"), Some(Level::Notice));
        assert_eq!(Level::parse("warn"), None, "SPDK knows only WARNING");
        assert_eq!(Level::Warning.name(), "WARNING");
    }

    #[test]
    fn the_more_verbose_level_wins_and_debug_needs_a_flag() {
        assert_eq!(
            state(Level::Error, Level::Warning, &[]).directives(),
            "warn"
        );
        assert_eq!(state(Level::Debug, Level::Error, &[]).directives(), "info");
        assert_eq!(
            state(Level::Notice, Level::Debug, &["rpc"]).directives(),
            "info,pollux_target::rpc=debug"
        );
        // A flag below DEBUG changes nothing visible, as in SPDK.
        assert_eq!(
            state(Level::Error, Level::Error, &["nvme"]).directives(),
            "error,pollux_nvme=error"
        );
        for (name, _) in FLAGS {
            let d = state(Level::Debug, Level::Debug, &[name]).directives();
            EnvFilter::try_new(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
        }
    }

    #[test]
    fn flags_are_sorted_and_unique() {
        let names: Vec<&str> = FLAGS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn start_up_filter_sets_both_levels() {
        let s = LogState::from_filter(&EnvFilter::new("warn"));
        assert_eq!((s.level, s.print_level), (Level::Warning, Level::Warning));
        let s = LogState::from_filter(&EnvFilter::new("info,pollux_nvme=trace"));
        assert_eq!(s.print_level, Level::Debug);
    }
}
