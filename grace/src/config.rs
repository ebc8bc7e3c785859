//! Run-time settings, from `GRACE_*` environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRACE_NO_MEMBARRIER` | `1`/`true`/`yes`/`on`: use the fence fallback instead of `membarrier` (`0`/`false`/`no`/`off`/empty: do not) | `0` |
//! | `GRACE_LAZY_MS` | how long a lazy `call` may wait to be batched, in milliseconds (1..=60000) | `10` |
//! | `GRACE_CB_WORKERS` | callback worker threads per flavor (1..=256) | half the CPUs, 1 to 4 |
//! | `GRACE_BUDGET` | memory budget for everything pending (`64MiB`, `1G`, bytes; `0`/`off`: none), see [`crate::pressure`] | none |
//! | `GRACE_FLOOD_CALLBACKS` | waiting callbacks per shard that start flood mode | `10000` |
//! | `GRACE_FLOOD_BYTES` | waiting bytes per shard that start flood mode | `8MiB` |
//! | `GRACE_FLOOD_RATE` | callbacks queued per second on one flavor that start flood mode | `10000000` |
//! | `GRACE_PENDING` | `off`: the chicken switch, every `Pending` object and every `kvfree` goes through its own RCU callback, no batching (see [`crate::pending::set_batching`]); `on`: batched | `on` |
//! | `GRACE_STALL_MS` | stall-warning threshold in milliseconds (`0`/`off`: none), see [`crate::report`](mod@crate::report) | `10000` |
//! | `GRACE_REPORT_SIGNAL` | `USR1`/`USR2`: print [`crate::report()`] on that signal, see [`crate::report`](mod@crate::report) | none |
//! | `GRACE_CB_OFFLOAD` | `1`: RCU callbacks run only on worker threads ([`Invocation::Offloaded`](crate::rcu::Invocation)); `0`: on the threads that queued them ([`Invocation::Local`](crate::rcu::Invocation)) | `0` |
//!
//! The library reads them once, when a flavor first initializes. A malformed value (a value
//! that is not UTF-8 included) is reported on standard error, once, and that variable keeps
//! its default; the valid ones still apply (the library has no caller to return an error to at
//! that point). Programs that want to refuse bad settings call [`Config::from_env`] themselves
//! first, as the `grace` command does.

use std::fmt;
use std::time::Duration;

/// Settings for a flavor's machinery.
///
/// # Examples
///
/// ```
/// let cfg = grace::config::Config::default();
/// assert!(!cfg.no_membarrier);
/// assert!(cfg.lazy_delay >= std::time::Duration::from_millis(1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Use the fence fallback even where `membarrier` works (`GRACE_NO_MEMBARRIER`).
    pub no_membarrier: bool,
    /// Longest time a lazy `call` waits to be batched (`GRACE_LAZY_MS`).
    pub lazy_delay: Duration,
    /// Callback worker threads (`GRACE_CB_WORKERS`).
    pub workers: usize,
    /// The memory budget in bytes (`GRACE_BUDGET`; see [`crate::pressure`]), `None` for none.
    pub budget: Option<u64>,
    /// Waiting callbacks per shard that start flood mode (`GRACE_FLOOD_CALLBACKS`).
    pub flood_callbacks: u64,
    /// Waiting bytes per shard that start flood mode (`GRACE_FLOOD_BYTES`).
    pub flood_bytes: u64,
    /// Callbacks queued per second on one flavor that start flood mode (`GRACE_FLOOD_RATE`).
    pub flood_rate: u64,
    /// Where RCU callbacks run at start-up (`GRACE_CB_OFFLOAD`); switchable at run time with
    /// [`rcu::set_callback_invocation`](crate::rcu::set_callback_invocation).
    pub invocation: crate::callback::Invocation,
    /// `Pending` and `kvfree` batch their objects (`GRACE_PENDING=on`, the default); `false`
    /// is the chicken switch, one callback per object (see [`crate::pending::set_batching`]).
    pub batching: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            no_membarrier: false,
            lazy_delay: Duration::from_millis(10),
            // Half the CPUs: the other half stays free for the threads that queue callbacks.
            workers: (crate::sys::num_cpus() / 2).clamp(1, 4),
            budget: None,
            flood_callbacks: 10_000,
            flood_bytes: 8 << 20,
            flood_rate: 10_000_000,
            // Local: measured faster for callbacks that free memory (BENCHMARKS.md, `bench call`).
            invocation: crate::callback::Invocation::Local,
            batching: true,
        }
    }
}

/// A malformed `GRACE_*` setting.
///
/// # Examples
///
/// ```
/// let err = grace::config::Config::parse(|k| (k == "GRACE_LAZY_MS").then(|| "soon".to_string()))
///     .unwrap_err();
/// assert!(err.to_string().contains("GRACE_LAZY_MS"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read the settings from the process environment.
    ///
    /// # Examples
    ///
    /// ```
    /// // With no GRACE_* variables set this is the default.
    /// # std::env::remove_var("GRACE_LAZY_MS");
    /// let cfg = grace::config::Config::from_env().unwrap();
    /// # let _ = cfg;
    /// ```
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::parse(env_var)
    }

    /// Read the settings through `get` (a variable name to its value), for testing and for
    /// programs with their own configuration source.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::config::Config;
    /// let cfg = Config::parse(|k| match k {
    ///     "GRACE_NO_MEMBARRIER" => Some("1".into()),
    ///     "GRACE_LAZY_MS" => Some("50".into()),
    ///     _ => None,
    /// })
    /// .unwrap();
    /// assert!(cfg.no_membarrier);
    /// assert_eq!(cfg.lazy_delay.as_millis(), 50);
    /// ```
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (cfg, errors) = Config::parse_lenient(get);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(cfg),
        }
    }

    /// Read the settings through `get`, keeping every valid one: a malformed variable keeps
    /// its default and is returned among the errors, without discarding the others. This is
    /// what the library itself does with the environment (warning once per bad variable).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::config::Config;
    /// let (cfg, errors) = Config::parse_lenient(|k| match k {
    ///     "GRACE_NO_MEMBARRIER" => Some("1".into()),
    ///     "GRACE_LAZY_MS" => Some("abc".into()),
    ///     _ => None,
    /// });
    /// assert!(cfg.no_membarrier); // kept
    /// assert_eq!(cfg.lazy_delay, Config::default().lazy_delay); // the default
    /// assert_eq!(errors.len(), 1);
    /// assert_eq!(errors[0].var, "GRACE_LAZY_MS");
    /// ```
    pub fn parse_lenient(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigError>) {
        let mut cfg = Config::default();
        let mut errors = Vec::new();
        let mut bad = |var: &'static str, value: String, expected: &'static str| {
            errors.push(ConfigError {
                var,
                value,
                expected,
            })
        };
        if let Some(v) = get("GRACE_NO_MEMBARRIER") {
            match v.trim() {
                "1" | "true" | "yes" | "on" => cfg.no_membarrier = true,
                "0" | "false" | "no" | "off" | "" => cfg.no_membarrier = false,
                _ => bad("GRACE_NO_MEMBARRIER", v, NO_MEMBARRIER_VALUES),
            }
        }
        if let Some(v) = get("GRACE_BUDGET") {
            match v.trim() {
                "0" | "off" | "none" | "" => cfg.budget = None,
                t => match parse_bytes(t) {
                    Some(n) => cfg.budget = Some(n),
                    None => bad(
                        "GRACE_BUDGET",
                        v,
                        "a size in bytes, like 64MiB, 512KiB, 1G or 1048576 (0 or off: none)",
                    ),
                },
            }
        }
        if let Some(v) = get("GRACE_FLOOD_CALLBACKS") {
            match v.trim().parse::<u64>() {
                Ok(n @ 1..) => cfg.flood_callbacks = n,
                _ => bad("GRACE_FLOOD_CALLBACKS", v, "a positive integer"),
            }
        }
        if let Some(v) = get("GRACE_FLOOD_BYTES") {
            match parse_bytes(v.trim()) {
                Some(n) if n > 0 => cfg.flood_bytes = n,
                _ => bad(
                    "GRACE_FLOOD_BYTES",
                    v,
                    "a positive size in bytes, like 8MiB",
                ),
            }
        }
        if let Some(v) = get("GRACE_FLOOD_RATE") {
            match v.trim().parse::<u64>() {
                Ok(n @ 1..) => cfg.flood_rate = n,
                _ => bad(
                    "GRACE_FLOOD_RATE",
                    v,
                    "a positive integer (callbacks per second)",
                ),
            }
        }
        if let Some(v) = get("GRACE_CB_OFFLOAD") {
            match v.trim() {
                "1" | "true" | "yes" | "on" => {
                    cfg.invocation = crate::callback::Invocation::Offloaded
                }
                "0" | "false" | "no" | "off" | "" => {
                    cfg.invocation = crate::callback::Invocation::Local
                }
                _ => bad(
                    "GRACE_CB_OFFLOAD",
                    v,
                    "1, true, yes or on (workers only), or 0, false, no, off or empty (local)",
                ),
            }
        }
        if let Some(v) = get("GRACE_PENDING") {
            match v.trim() {
                "1" | "true" | "yes" | "on" | "" => cfg.batching = true,
                "0" | "false" | "no" | "off" => cfg.batching = false,
                _ => bad(
                    "GRACE_PENDING",
                    v,
                    "on or off (also 1/0, true/false, yes/no)",
                ),
            }
        }
        if let Some(v) = get("GRACE_LAZY_MS") {
            match v.trim().parse::<u64>() {
                Ok(ms @ 1..=60_000) => cfg.lazy_delay = Duration::from_millis(ms),
                _ => bad(
                    "GRACE_LAZY_MS",
                    v,
                    "an integer number of milliseconds in 1..=60000",
                ),
            }
        }
        if let Some(v) = get("GRACE_CB_WORKERS") {
            match v.trim().parse::<usize>() {
                Ok(n @ 1..=256) => cfg.workers = n,
                _ => bad("GRACE_CB_WORKERS", v, "an integer in 1..=256"),
            }
        }
        (cfg, errors)
    }

    /// The environment's settings, keeping every valid one; each malformed one is reported on
    /// standard error, once per process.
    #[cfg_attr(loom, allow(dead_code))] // its users are compiled out under loom
    pub(crate) fn from_env_or_warn() -> Config {
        let (cfg, errors) = Config::parse_lenient(env_var);
        static WARNED: std::sync::Once = std::sync::Once::new();
        if !errors.is_empty() {
            WARNED.call_once(|| {
                for e in &errors {
                    crate::sys::report(format_args!("grace: {e}; using its default"));
                }
            });
        }
        cfg
    }
}

/// A size: a number of bytes with an optional unit, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/
/// `GiB` (all powers of 1024), case-insensitive; `None` if malformed or too large.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// What `GRACE_NO_MEMBARRIER` accepts, as its error message says.
const NO_MEMBARRIER_VALUES: &str = "1, true, yes or on (fences), or 0, false, no, off or empty";

/// A variable of the process environment. A value that is not UTF-8 is passed on lossily
/// (with U+FFFD in place of the bad bytes), so that it is reported as malformed rather than
/// ignored in silence.
fn env_var(k: &str) -> Option<String> {
    std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("12XB"), None);
        assert_eq!(parse_bytes("MiB"), None);
        let c = Config::parse(|k| (k == "GRACE_BUDGET").then(|| "64MiB".to_string())).unwrap();
        assert_eq!(c.budget, Some(64 << 20));
        let c = Config::parse(|k| (k == "GRACE_BUDGET").then(|| "off".to_string())).unwrap();
        assert_eq!(c.budget, None);
    }

    #[test]
    fn a_malformed_setting_keeps_the_valid_ones() {
        let (cfg, errors) = Config::parse_lenient(|k| match k {
            "GRACE_NO_MEMBARRIER" => Some("1".into()),
            "GRACE_LAZY_MS" => Some("abc".into()),
            "GRACE_CB_WORKERS" => Some("many".into()),
            _ => None,
        });
        assert!(cfg.no_membarrier);
        assert_eq!(cfg.lazy_delay, Config::default().lazy_delay);
        assert_eq!(cfg.workers, Config::default().workers);
        let vars: Vec<_> = errors.iter().map(|e| e.var).collect();
        assert_eq!(vars, ["GRACE_LAZY_MS", "GRACE_CB_WORKERS"]);
    }

    #[test]
    fn no_membarrier_accepts_what_its_message_lists() {
        let e =
            Config::parse(|k| (k == "GRACE_NO_MEMBARRIER").then(|| "maybe".into())).unwrap_err();
        for ok in ["1", "true", "yes", "on", "0", "false", "no", "off", ""] {
            assert!(e.expected.contains(ok), "{ok:?} accepted but not listed");
            assert!(
                Config::parse(|k| (k == "GRACE_NO_MEMBARRIER").then(|| ok.into())).is_ok(),
                "{ok:?} listed but refused"
            );
        }
    }

    #[test]
    fn the_chicken_switch_parses() {
        assert!(Config::default().batching);
        let c = Config::parse(|k| (k == "GRACE_PENDING").then(|| "off".to_string())).unwrap();
        assert!(!c.batching);
        let c = Config::parse(|k| (k == "GRACE_PENDING").then(|| " on ".to_string())).unwrap();
        assert!(c.batching);
    }

    #[test]
    fn every_malformed_setting_is_named() {
        for (var, bad) in [
            ("GRACE_NO_MEMBARRIER", "maybe"),
            ("GRACE_LAZY_MS", "0"),
            ("GRACE_LAZY_MS", "-5"),
            ("GRACE_LAZY_MS", "99999999"),
            ("GRACE_CB_WORKERS", "0"),
            ("GRACE_CB_WORKERS", "many"),
            ("GRACE_CB_OFFLOAD", "sometimes"),
            ("GRACE_PENDING", "batched"),
            ("GRACE_BUDGET", "lots"),
            ("GRACE_BUDGET", "12XB"),
            ("GRACE_BUDGET", "99999999999999999999G"),
            ("GRACE_FLOOD_CALLBACKS", "0"),
            ("GRACE_FLOOD_BYTES", "-1"),
            ("GRACE_FLOOD_RATE", "fast"),
        ] {
            let e = Config::parse(|k| (k == var).then(|| bad.to_string())).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(bad));
        }
    }
}
