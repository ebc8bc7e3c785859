//! Run-time settings, from `GRACE_*` environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRACE_NO_MEMBARRIER` | `1`/`true`: use the fence fallback instead of `membarrier` | `0` |
//! | `GRACE_LAZY_MS` | how long a lazy `call` may wait to be batched, in milliseconds (1..=60000) | `10` |
//! | `GRACE_CB_WORKERS` | callback worker threads per flavor (1..=256) | half the CPUs, 1 to 4 |
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

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            let e = Config::parse(|k| (k == var).then(|| bad.to_string())).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(bad));
        }
    }
}
