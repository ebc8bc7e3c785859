//! Run-time settings, from `GRACE_*` environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRACE_NO_MEMBARRIER` | `1`/`true`: use the fence fallback instead of `membarrier` | `0` |
//! | `GRACE_LAZY_MS` | how long a lazy `call` may wait to be batched, in milliseconds (1..=60000) | `10` |
//! | `GRACE_CB_WORKERS` | callback worker threads per flavor (1..=256) | half the CPUs, 1 to 4 |
//! | `GRACE_BUDGET` | memory budget for everything pending (`64MiB`, `1G`, bytes; `0`/`off`: none), see [`crate::pressure`] | none |
//! | `GRACE_FLOOD_CALLBACKS` | waiting callbacks per shard that start flood mode | `10000` |
//! | `GRACE_FLOOD_BYTES` | waiting bytes per shard that start flood mode | `8MiB` |
//! | `GRACE_STALL_MS` | stall-warning threshold in milliseconds (`0`/`off`: none), see [`crate::report`](mod@crate::report) | `10000` |
//! | `GRACE_REPORT_SIGNAL` | `USR1`/`USR2`: print [`crate::report()`] on that signal, see [`crate::report`](mod@crate::report) | none |
//! | `GRACE_CB_OFFLOAD` | `1`: RCU callbacks run only on worker threads ([`Invocation::Offloaded`](crate::rcu::Invocation)); `0`: on the threads that queued them ([`Invocation::Local`](crate::rcu::Invocation)) | `0` |
//!
//! The library reads them once, when a flavor first initializes. A malformed value is reported
//! on standard error and ignored (the library has no caller to return an error to at that
//! point); programs that want to refuse bad settings call [`Config::from_env`] themselves
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
    /// Where RCU callbacks run at start-up (`GRACE_CB_OFFLOAD`); switchable at run time with
    /// [`rcu::set_callback_invocation`](crate::rcu::set_callback_invocation).
    pub invocation: crate::callback::Invocation,
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
            // Local: measured faster for callbacks that free memory (BENCHMARKS.md, `bench call`).
            invocation: crate::callback::Invocation::Local,
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
        Config::parse(|k| std::env::var(k).ok())
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
        let mut cfg = Config::default();
        if let Some(v) = get("GRACE_NO_MEMBARRIER") {
            cfg.no_membarrier = match v.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_NO_MEMBARRIER",
                        value: v,
                        expected: "0 or 1",
                    })
                }
            };
        }
        if let Some(v) = get("GRACE_BUDGET") {
            cfg.budget = match v.trim() {
                "0" | "off" | "none" | "" => None,
                t => Some(parse_bytes(t).ok_or_else(|| ConfigError {
                    var: "GRACE_BUDGET",
                    value: v.clone(),
                    expected: "a size in bytes, like 64MiB, 512KiB, 1G or 1048576 (0 or off: none)",
                })?),
            };
        }
        if let Some(v) = get("GRACE_FLOOD_CALLBACKS") {
            match v.trim().parse::<u64>() {
                Ok(n @ 1..) => cfg.flood_callbacks = n,
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_FLOOD_CALLBACKS",
                        value: v,
                        expected: "a positive integer",
                    })
                }
            }
        }
        if let Some(v) = get("GRACE_FLOOD_BYTES") {
            match parse_bytes(v.trim()) {
                Some(n) if n > 0 => cfg.flood_bytes = n,
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_FLOOD_BYTES",
                        value: v,
                        expected: "a positive size in bytes, like 8MiB",
                    })
                }
            }
        }
        if let Some(v) = get("GRACE_CB_OFFLOAD") {
            cfg.invocation = match v.trim() {
                "1" | "true" | "yes" | "on" => crate::callback::Invocation::Offloaded,
                "0" | "false" | "no" | "off" | "" => crate::callback::Invocation::Local,
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_CB_OFFLOAD",
                        value: v,
                        expected: "0 or 1 (also true/false, yes/no, on/off)",
                    })
                }
            };
        }
        if let Some(v) = get("GRACE_LAZY_MS") {
            match v.trim().parse::<u64>() {
                Ok(ms @ 1..=60_000) => cfg.lazy_delay = Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_LAZY_MS",
                        value: v,
                        expected: "an integer number of milliseconds in 1..=60000",
                    })
                }
            }
        }
        if let Some(v) = get("GRACE_CB_WORKERS") {
            match v.trim().parse::<usize>() {
                Ok(n @ 1..=256) => cfg.workers = n,
                _ => {
                    return Err(ConfigError {
                        var: "GRACE_CB_WORKERS",
                        value: v,
                        expected: "an integer in 1..=256",
                    })
                }
            }
        }
        Ok(cfg)
    }

    /// The environment's settings, or the defaults with a warning on standard error.
    #[cfg_attr(loom, allow(dead_code))] // its users are compiled out under loom
    pub(crate) fn from_env_or_warn() -> Config {
        Config::from_env().unwrap_or_else(|e| {
            eprintln!("grace: {e}; using the default settings");
            Config::default()
        })
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
    fn every_malformed_setting_is_named() {
        for (var, bad) in [
            ("GRACE_NO_MEMBARRIER", "maybe"),
            ("GRACE_LAZY_MS", "0"),
            ("GRACE_LAZY_MS", "-5"),
            ("GRACE_LAZY_MS", "99999999"),
            ("GRACE_CB_WORKERS", "0"),
            ("GRACE_CB_WORKERS", "many"),
            ("GRACE_CB_OFFLOAD", "sometimes"),
            ("GRACE_BUDGET", "lots"),
            ("GRACE_BUDGET", "12XB"),
            ("GRACE_BUDGET", "99999999999999999999G"),
            ("GRACE_FLOOD_CALLBACKS", "0"),
            ("GRACE_FLOOD_BYTES", "-1"),
        ] {
            let e = Config::parse(|k| (k == var).then(|| bad.to_string())).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(bad));
        }
    }
}
