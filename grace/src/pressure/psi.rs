//! Linux pressure stall information (PSI): a monitor that calls a handler when the system, or
//! the process's own cgroup, stalls on memory.
//!
//! # What PSI measures
//!
//! Since Linux 4.20 (`CONFIG_PSI`) the kernel accounts, per resource (CPU, memory, I/O), the
//! time tasks spend *stalled* waiting for it, and publishes it in `/proc/pressure/<resource>`
//! and, on cgroup v2, in each cgroup's `<resource>.pressure`:
//!
//! ```text
//! some avg10=0.00 avg60=0.12 avg300=0.31 total=8739123
//! full avg10=0.00 avg60=0.05 avg300=0.14 total=4418220
//! ```
//!
//! * `some` is the share of wall time in which **at least one** task was stalled on the
//!   resource: for memory, a task waiting in direct reclaim, on a refault of its working set,
//!   or on swap-in. Work was delayed, even if other tasks still ran.
//! * `full` is the share of time in which **all** non-idle tasks were stalled at once: the
//!   CPU was there but nothing useful could run on it. It is the signal of lost throughput,
//!   the one that precedes the OOM killer. (CPU files before Linux 5.13 have no `full` line;
//!   the parser accepts both.)
//! * `avg10`/`avg60`/`avg300` are running averages in percent over 10 s, 60 s and 5 min, and
//!   `total` is the cumulative stall time in microseconds, the only exact figure.
//!
//! # Triggers versus polling
//!
//! Averages refresh every 2 s and smooth spikes away, so a program that reads them learns
//! late. Since Linux 5.2 a program can instead write a *trigger* such as
//! `"some 150000 1000000"` to the file ("tell me when the `some` stall time exceeds 150 ms
//! within any 1 s window") and `poll` the descriptor: the kernel measures the stall growth
//! ten times per window (`psi_rtpoll_worker`) and wakes the poller with `POLLPRI`, at most once
//! per window. That is what [`PsiMonitor`] does first ([`PsiMode::KernelTrigger`]).
//!
//! The kernel refuses triggers in some places: processes without `CAP_SYS_RESOURCE` may only
//! use windows that are multiples of 2 s (since Linux 6.4; before that the trigger needed the
//! capability), containers may mount `/proc` or the cgroup tree read-only, and `EOPNOTSUPP`
//! comes back where pressure accounting is switched off. When the file is still readable the
//! monitor then *samples* it instead ([`PsiMode::Sampled`]): it reads `total` every tenth of
//! a window and applies the kernel's rule itself in a [`Sampler`] — stall growth within the
//! last window at or above the threshold, at most one event per window. Sampling costs a read
//! of a small file every 50 ms to 1 s and reacts within one sampling interval of the kernel.
//!
//! # Why the cgroup first
//!
//! A process in a container (or a systemd service with `MemoryMax=`) runs out of memory at its
//! cgroup's limit, long before the machine does: `/proc/pressure/memory` can read zero while
//! the cgroup thrashes in reclaim against `memory.max`. The cgroup v2 `memory.pressure` file
//! of the process's own cgroup measures exactly the stalls that the limit causes, and in a
//! container it is often the only PSI file that says anything about the container at all.
//! [`PsiSource::Auto`] therefore reads `/proc/self/cgroup`, looks for that cgroup's
//! `memory.pressure` under `/sys/fs/cgroup` (the unified hierarchy) and
//! `/sys/fs/cgroup/unified` (the hybrid layout of older systemd), and only falls back to the
//! system-wide `/proc/pressure/memory` when there is none.
//!
//! # What the monitor does not do
//!
//! It only reports. [`PsiMonitor::start`] takes a handler, `FnMut(PsiEvent) + Send +
//! 'static`, called on the monitor's own thread (`grace-psi`) for every event; an
//! application wires it to whatever should give memory back (grace's shrinker, its own
//! caches). The handler should be quick: events arrive at most once per window, and the
//! next one is not observed while it runs.
//!
//! # Examples
//!
//! ```no_run
//! use grace::pressure::psi::{PsiMonitor, PsiSource, StallKind, Trigger};
//! use std::time::Duration;
//!
//! let trigger = Trigger::new(StallKind::Some, Duration::from_millis(150), Duration::from_secs(2))?;
//! let monitor = PsiMonitor::start(PsiSource::Auto, trigger, |event| {
//!     eprintln!("memory pressure on {}: {:?}", event.path.display(), event.pressure);
//! });
//! match monitor {
//!     Ok(m) => println!("watching {} ({:?})", m.path().display(), m.mode()),
//!     Err(e) => eprintln!("no PSI monitor: {e}"),
//! }
//! # Ok::<(), grace::pressure::psi::PsiError>(())
//! ```

use crate::config::ConfigError;
use crate::sys::psi as sys;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The system-wide memory pressure file.
///
/// # Examples
///
/// ```
/// assert_eq!(grace::pressure::psi::SYSTEM_MEMORY_PRESSURE, "/proc/pressure/memory");
/// ```
pub const SYSTEM_MEMORY_PRESSURE: &str = "/proc/pressure/memory";

/// Which PSI line: `some` (at least one task stalled) or `full` (all non-idle tasks stalled).
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::StallKind;
/// assert_eq!("full".parse::<StallKind>(), Ok(StallKind::Full));
/// assert_eq!(StallKind::Some.to_string(), "some");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StallKind {
    /// At least one task was stalled on the resource.
    Some,
    /// Every non-idle task was stalled at once.
    Full,
}

impl StallKind {
    fn as_str(self) -> &'static str {
        match self {
            StallKind::Some => "some",
            StallKind::Full => "full",
        }
    }
}

impl fmt::Display for StallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StallKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<StallKind, ParseError> {
        match s {
            "some" => Ok(StallKind::Some),
            "full" => Ok(StallKind::Full),
            other => Err(ParseError::new(0, other, "`some` or `full`")),
        }
    }
}

/// One line of a pressure file.
///
/// # Examples
///
/// ```
/// let p: grace::pressure::psi::Pressure =
///     "some avg10=1.50 avg60=0.40 avg300=0.10 total=52000".parse()?;
/// assert_eq!(p.some.avg10, 1.5);
/// assert_eq!(p.some.total_us, 52_000);
/// # Ok::<(), grace::pressure::psi::ParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// Percentage of the last 10 s spent stalled.
    pub avg10: f64,
    /// Percentage of the last 60 s spent stalled.
    pub avg60: f64,
    /// Percentage of the last 300 s spent stalled.
    pub avg300: f64,
    /// Total stall time since boot (or since the cgroup was created), in microseconds.
    pub total_us: u64,
}

/// A parsed pressure file: the `some` line, and the `full` line where the file has one.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{Pressure, StallKind};
/// let p = Pressure::parse(
///     "some avg10=0.00 avg60=0.12 avg300=0.31 total=8739123\n\
///      full avg10=0.00 avg60=0.05 avg300=0.14 total=4418220\n",
/// )?;
/// assert_eq!(p.get(StallKind::Full).map(|s| s.total_us), Some(4_418_220));
/// assert_eq!(p.to_string().lines().count(), 2);
/// # Ok::<(), grace::pressure::psi::ParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pressure {
    /// The `some` line.
    pub some: Stall,
    /// The `full` line; `None` in the CPU files of kernels before 5.13.
    pub full: Option<Stall>,
}

/// A pressure file that is not in the kernel's format.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::Pressure;
/// let e = Pressure::parse("some avg10=oops avg60=0 avg300=0 total=0").unwrap_err();
/// assert_eq!(e.line, 1);
/// assert!(e.to_string().contains("avg10=oops"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line the problem is on, or 0 when it concerns the whole input.
    pub line: usize,
    /// The offending text (at most 80 characters of it).
    pub text: String,
    /// What was expected there.
    pub expected: &'static str,
}

impl ParseError {
    fn new(line: usize, text: &str, expected: &'static str) -> ParseError {
        ParseError {
            line,
            text: text.chars().take(80).collect(),
            expected,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{:?}: expected {}", self.text, self.expected)
        } else {
            write!(
                f,
                "line {} ({:?}): expected {}",
                self.line, self.text, self.expected
            )
        }
    }
}

impl std::error::Error for ParseError {}

/// `avg10=` values: digits with an optional fraction, as the kernel prints `%lu.%02lu`.
fn parse_avg(v: &str) -> Option<f64> {
    let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return None;
    }
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Parse the `key=value` fields of one line (after its first word).
fn parse_fields<'a>(
    line_no: usize,
    fields: impl Iterator<Item = &'a str>,
) -> Result<Stall, ParseError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(ParseError::new(line_no, field, "`key=value` fields"));
        };
        let slot = match key {
            "avg10" => &mut avg10,
            "avg60" => &mut avg60,
            "avg300" => &mut avg300,
            "total" => {
                if total.is_some() {
                    return Err(ParseError::new(line_no, field, "each field once"));
                }
                let t = value.parse::<u64>().map_err(|_| {
                    ParseError::new(
                        line_no,
                        field,
                        "`total=` with a whole number of microseconds",
                    )
                })?;
                total = Some(t);
                continue;
            }
            // A key a later kernel may add: tolerated, but it must still look like one.
            _ if !key.is_empty() && !value.is_empty() => continue,
            _ => return Err(ParseError::new(line_no, field, "`key=value` fields")),
        };
        if slot.is_some() {
            return Err(ParseError::new(line_no, field, "each field once"));
        }
        *slot = Some(parse_avg(value).ok_or_else(|| {
            ParseError::new(line_no, field, "a percentage such as `avg10=12.34`")
        })?);
    }
    match (avg10, avg60, avg300, total) {
        (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => Ok(Stall {
            avg10,
            avg60,
            avg300,
            total_us,
        }),
        _ => Err(ParseError::new(
            line_no,
            "",
            "all of `avg10=`, `avg60=`, `avg300=` and `total=`",
        )),
    }
}

impl Pressure {
    /// Parse the text of a pressure file (`/proc/pressure/*`, a cgroup's `*.pressure`).
    ///
    /// A `some` line is required; a `full` line is optional; blank lines, keys this parser
    /// does not know (`peak=`) and lines of another lower-case kind are skipped, so that a
    /// later kernel's additions do not break it. Anything else is a [`ParseError`] naming
    /// the line, never a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::Pressure;
    /// let cpu_on_linux_5_4 = "some avg10=75.17 avg60=86.98 avg300=76.97 total=579240492\n";
    /// let p = Pressure::parse(cpu_on_linux_5_4)?;
    /// assert!(p.full.is_none());
    /// assert!(Pressure::parse("").is_err());
    /// # Ok::<(), grace::pressure::psi::ParseError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Pressure, ParseError> {
        let (mut some, mut full) = (None, None);
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            let mut words = line.split_ascii_whitespace();
            let Some(kind) = words.next() else {
                continue; // blank line
            };
            let slot = match kind {
                "some" => &mut some,
                "full" => &mut full,
                other if other.bytes().all(|b| b.is_ascii_lowercase()) => {
                    // An unknown kind of line: check its shape, then skip it.
                    for field in words {
                        if !field.contains('=') {
                            return Err(ParseError::new(line_no, line, "`key=value` fields"));
                        }
                    }
                    continue;
                }
                _ => {
                    return Err(ParseError::new(
                        line_no,
                        line,
                        "a line starting with `some` or `full`",
                    ))
                }
            };
            if slot.is_some() {
                return Err(ParseError::new(
                    line_no,
                    line,
                    "one `some` and one `full` line",
                ));
            }
            *slot = Some(parse_fields(line_no, words).map_err(|mut e| {
                if e.text.is_empty() {
                    e.text = line.chars().take(80).collect();
                }
                e
            })?);
        }
        match some {
            Some(some) => Ok(Pressure { some, full }),
            None => Err(ParseError::new(
                0,
                text,
                "a `some avg10=… avg60=… avg300=… total=…` line",
            )),
        }
    }

    /// The line of `kind`, if the file has it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::{Pressure, StallKind};
    /// let p = Pressure::parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=7")?;
    /// assert_eq!(p.get(StallKind::Some).unwrap().total_us, 7);
    /// assert!(p.get(StallKind::Full).is_none());
    /// # Ok::<(), grace::pressure::psi::ParseError>(())
    /// ```
    pub fn get(&self, kind: StallKind) -> Option<&Stall> {
        match kind {
            StallKind::Some => Some(&self.some),
            StallKind::Full => self.full.as_ref(),
        }
    }
}

impl FromStr for Pressure {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Pressure, ParseError> {
        Pressure::parse(s)
    }
}

impl fmt::Display for Pressure {
    /// The file's own format, one line per kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = |kind: StallKind, s: &Stall| {
            writeln!(
                f,
                "{kind} avg10={:.2} avg60={:.2} avg300={:.2} total={}",
                s.avg10, s.avg60, s.avg300, s.total_us
            )
        };
        line(StallKind::Some, &self.some)?;
        if let Some(full) = &self.full {
            line(StallKind::Full, full)?;
        }
        Ok(())
    }
}

/// A PSI trigger: "wake me when `kind` stall time reaches `stall` within any `window`".
///
/// Its text form is the one the kernel reads, `"<some|full> <stall µs> <window µs>"`, and
/// [`Trigger::new`] applies the kernel's checks (`psi_trigger_create`) so that a bad trigger
/// is refused here with a reason rather than by an `EINVAL` from the kernel:
///
/// * the window lies in [`Trigger::MIN_WINDOW`]`..=`[`Trigger::MAX_WINDOW`] (500 ms to
///   10 s; recent kernels accept shorter windows from privileged processes, older ones do
///   not, and grace keeps the portable floor);
/// * the stall threshold is at least 1 µs and at most the window;
/// * both are whole microseconds (finer parts are cut off before the checks).
///
/// Processes without `CAP_SYS_RESOURCE` are held to one more rule, checked by
/// [`Trigger::check_unprivileged`]: the window must be a multiple of 2 s. The monitor does
/// not apply it up front (it cannot know what the kernel will grant); when the kernel refuses
/// a trigger, the monitor samples instead.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{StallKind, Trigger};
/// use std::time::Duration;
/// let t: Trigger = "full 50000 1000000".parse()?;
/// assert_eq!(t.kind(), StallKind::Full);
/// assert_eq!(t.stall(), Duration::from_millis(50));
/// assert!(t.check_unprivileged().is_err()); // 1 s is not a multiple of 2 s
/// assert!("some 2000000 1000000".parse::<Trigger>().is_err()); // stall > window
/// # Ok::<(), grace::pressure::psi::PsiError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trigger {
    kind: StallKind,
    stall_us: u32,
    window_us: u32,
}

impl Trigger {
    /// The shortest window grace accepts (the kernel's limit before Linux 6.4).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::pressure::psi::Trigger::MIN_WINDOW.as_millis(), 500);
    /// ```
    pub const MIN_WINDOW: Duration = Duration::from_millis(500);

    /// The longest window the kernel accepts (`WINDOW_MAX_US`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::pressure::psi::Trigger::MAX_WINDOW.as_secs(), 10);
    /// ```
    pub const MAX_WINDOW: Duration = Duration::from_secs(10);

    /// Windows of unprivileged triggers must be multiples of this.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::pressure::psi::Trigger::UNPRIVILEGED_GRANULE.as_secs(), 2);
    /// ```
    pub const UNPRIVILEGED_GRANULE: Duration = Duration::from_secs(2);

    /// A trigger on `kind` stalls of `stall` within `window`, checked as the kernel checks it.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::{StallKind, Trigger};
    /// use std::time::Duration;
    /// let t = Trigger::new(StallKind::Some, Duration::from_millis(150), Duration::from_secs(1))?;
    /// assert_eq!(t.to_string(), "some 150000 1000000");
    /// assert!(Trigger::new(StallKind::Some, Duration::ZERO, Duration::from_secs(1)).is_err());
    /// assert!(Trigger::new(StallKind::Some, Duration::from_millis(1), Duration::from_secs(11)).is_err());
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn new(kind: StallKind, stall: Duration, window: Duration) -> Result<Trigger, PsiError> {
        let text = || format!("{kind} {} {}", stall.as_micros(), window.as_micros());
        let invalid = |reason| {
            Err(PsiError::InvalidTrigger {
                trigger: text(),
                reason,
            })
        };
        if window < Trigger::MIN_WINDOW || window > Trigger::MAX_WINDOW {
            return invalid("the window must lie between 500 ms and 10 s");
        }
        // Both fit: window <= 10 s = 10^7 µs, and stall is checked against the window first.
        if stall > window {
            return invalid("the stall threshold must not exceed the window");
        }
        let (stall_us, window_us) = (stall.as_micros() as u32, window.as_micros() as u32);
        if stall_us == 0 {
            return invalid("the stall threshold must be at least 1 µs");
        }
        Ok(Trigger {
            kind,
            stall_us,
            window_us,
        })
    }

    /// Which line the trigger watches.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::{StallKind, Trigger};
    /// assert_eq!(Trigger::default().kind(), StallKind::Some);
    /// ```
    pub fn kind(&self) -> StallKind {
        self.kind
    }

    /// The stall threshold.
    ///
    /// # Examples
    ///
    /// ```
    /// let t: grace::pressure::psi::Trigger = "some 150000 1000000".parse()?;
    /// assert_eq!(t.stall().as_micros(), 150_000);
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn stall(&self) -> Duration {
        Duration::from_micros(self.stall_us.into())
    }

    /// The window.
    ///
    /// # Examples
    ///
    /// ```
    /// let t: grace::pressure::psi::Trigger = "some 150000 1000000".parse()?;
    /// assert_eq!(t.window().as_secs(), 1);
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.window_us.into())
    }

    /// Check the rule the kernel applies to processes without `CAP_SYS_RESOURCE`: the window
    /// must be a multiple of 2 s (the kernel then reuses its 2 s averaging work instead of
    /// starting a real-time polling thread).
    ///
    /// # Examples
    ///
    /// ```
    /// let ok: grace::pressure::psi::Trigger = "some 100000 2000000".parse()?;
    /// assert!(ok.check_unprivileged().is_ok());
    /// let privileged_only: grace::pressure::psi::Trigger = "some 100000 1000000".parse()?;
    /// assert!(privileged_only.check_unprivileged().is_err());
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn check_unprivileged(&self) -> Result<(), PsiError> {
        let granule = Trigger::UNPRIVILEGED_GRANULE.as_micros() as u32;
        if self.window_us % granule == 0 {
            Ok(())
        } else {
            Err(PsiError::InvalidTrigger {
                trigger: self.to_string(),
                reason: "without CAP_SYS_RESOURCE the window must be a multiple of 2 s",
            })
        }
    }

    /// The bytes written to the kernel: the text form and a terminating NUL (the kernel
    /// overwrites a write's last byte with NUL, so the NUL must be there to lose).
    fn kernel_bytes(&self) -> Vec<u8> {
        let mut bytes = self.to_string().into_bytes();
        bytes.push(0);
        bytes
    }
}

impl Default for Trigger {
    /// `some 200000 2000000`: 200 ms of memory stall within 2 s (10 % of the time). A 2 s
    /// window is one an unprivileged process may install, and 10 % is a level at which
    /// reclaim is hurting latency but well before the OOM killer.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(grace::pressure::psi::Trigger::default().to_string(), "some 200000 2000000");
    /// ```
    fn default() -> Trigger {
        Trigger {
            kind: StallKind::Some,
            stall_us: 200_000,
            window_us: 2_000_000,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.stall_us, self.window_us)
    }
}

impl FromStr for Trigger {
    type Err = PsiError;

    /// Parse `"<some|full> <stall µs> <window µs>"` and check it with [`Trigger::new`].
    fn from_str(s: &str) -> Result<Trigger, PsiError> {
        let malformed = || PsiError::InvalidTrigger {
            trigger: s.chars().take(80).collect(),
            reason: "expected `<some|full> <stall µs> <window µs>`, e.g. `some 150000 1000000`",
        };
        let words: Vec<&str> = s.split_ascii_whitespace().collect();
        let [kind, stall, window] = words[..] else {
            return Err(malformed());
        };
        let kind = kind.parse::<StallKind>().map_err(|_| malformed())?;
        let us = |w: &str| w.parse::<u64>().map(Duration::from_micros);
        match (us(stall), us(window)) {
            (Ok(stall), Ok(window)) => Trigger::new(kind, stall, window),
            _ => Err(malformed()),
        }
    }
}

/// The polling fallback: the kernel's trigger rule, applied to samples of a pressure file's
/// `total`.
///
/// Feed it `(time, total)` pairs read every [`Sampler::interval`]; it answers with the stall
/// time of the last window when that reaches the trigger's threshold, at most once per window,
/// and only when the stall grew since the previous sample (`update_triggers` in the kernel
/// skips triggers whose state saw no new stall). The stall at the window's start is
/// interpolated between the two samples around it, as the kernel's `window_update` weighs
/// the previous window. Times are offsets from any fixed origin; a total or time going
/// backwards (another file, a restarted cgroup) restarts the history.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{Sampler, Trigger};
/// use std::time::Duration;
/// let mut s = Sampler::new("some 100000 1000000".parse()?);
/// let ms = Duration::from_millis;
/// assert_eq!(s.feed(ms(0), 5_000), None);
/// assert_eq!(s.feed(ms(500), 55_000), None); // 50 ms stalled: under the threshold
/// assert_eq!(s.feed(ms(900), 125_000), Some(ms(120))); // 120 ms within the last second
/// assert_eq!(s.feed(ms(1000), 185_000), None); // rate-limited: one event per window
/// # Ok::<(), grace::pressure::psi::PsiError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sampler {
    trigger: Trigger,
    /// Samples, oldest first; `samples[0]` is the newest one at or before the window's start
    /// once there is that much history.
    samples: VecDeque<(Duration, u64)>,
    last_event: Option<Duration>,
}

impl Sampler {
    /// A sampler with no history yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = grace::pressure::psi::Sampler::new(Default::default());
    /// assert_eq!(s.trigger().to_string(), "some 200000 2000000");
    /// ```
    pub fn new(trigger: Trigger) -> Sampler {
        Sampler {
            trigger,
            samples: VecDeque::new(),
            last_event: None,
        }
    }

    /// The trigger it applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::{Sampler, StallKind};
    /// assert_eq!(Sampler::new(Default::default()).trigger().kind(), StallKind::Some);
    /// ```
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// How often to sample: a tenth of the window (the kernel's `UPDATES_PER_WINDOW`),
    /// 50 ms to 1 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = grace::pressure::psi::Sampler::new("some 150000 2000000".parse()?);
    /// assert_eq!(s.interval().as_millis(), 200);
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn interval(&self) -> Duration {
        (self.trigger.window() / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Record that the total stall time was `total_us` at time `at`; returns the stall time
    /// within the last window when this sample fires the trigger.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::Sampler;
    /// use std::time::Duration;
    /// let mut s = Sampler::new("some 500000 1000000".parse()?);
    /// assert_eq!(s.feed(Duration::ZERO, 0), None);
    /// assert_eq!(s.feed(Duration::from_secs(1), 600_000), Some(Duration::from_millis(600)));
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn feed(&mut self, at: Duration, total_us: u64) -> Option<Duration> {
        let grew = match self.samples.back() {
            Some(&(t, v)) if at < t || total_us < v => {
                // Time or the counter went backwards: this is a new series.
                if at < t {
                    self.last_event = None;
                }
                self.samples.clear();
                false
            }
            Some(&(_, v)) => total_us > v,
            None => false,
        };
        self.samples.push_back((at, total_us));
        let window = self.trigger.window();
        let start = at.checked_sub(window);
        if let Some(start) = start {
            while self.samples.len() >= 2 && self.samples[1].0 <= start {
                self.samples.pop_front();
            }
        }
        if !grew {
            return None;
        }
        let growth = total_us - self.baseline(start);
        let fire = growth >= u64::from(self.trigger.stall_us)
            && self.last_event.map_or(true, |t| at >= t + window);
        if fire {
            self.last_event = Some(at);
            Some(Duration::from_micros(growth))
        } else {
            None
        }
    }

    /// The total at the window's start `start`: interpolated between the samples around it,
    /// or the oldest sample when the history is shorter than a window.
    fn baseline(&self, start: Option<Duration>) -> u64 {
        let (t0, v0) = self.samples[0];
        match (start, self.samples.get(1)) {
            (Some(start), Some(&(t1, v1))) if t0 <= start && start < t1 => {
                let span = (t1 - t0).as_nanos();
                let into = (start - t0).as_nanos();
                // Rounds down: the stall counted in the window is never overstated.
                let part = (u128::from(v1 - v0) * into / span) as u64;
                v0 + part
            }
            _ => v0,
        }
    }
}

/// Which pressure file to watch.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::PsiSource;
/// assert_eq!(PsiSource::default(), PsiSource::Auto);
/// assert_eq!(
///     PsiSource::System.resolve().ok().as_deref(),
///     Some(std::path::Path::new("/proc/pressure/memory"))
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PsiSource {
    /// The process's cgroup v2 `memory.pressure` when there is one, else
    /// `/proc/pressure/memory`.
    #[default]
    Auto,
    /// `/proc/pressure/memory`, the whole system.
    System,
    /// A pressure file of the caller's choice (another cgroup's, or a CPU or I/O file).
    Path(PathBuf),
}

/// The cgroup v2 path of the process, from the text of `/proc/self/cgroup` (the `0::/path`
/// line; cgroup v1 lines are ignored).
fn cgroup_v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
}

/// Where the cgroup's `memory.pressure` may be, in the order [`PsiSource::Auto`] tries them.
fn cgroup_candidates(cgroup: &str) -> [PathBuf; 2] {
    let rel = cgroup.trim_start_matches('/');
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .map(|root| Path::new(root).join(rel).join("memory.pressure"))
}

/// [`PsiSource::Auto`]'s choice, given `/proc/self/cgroup`'s text and a way to test a path.
fn auto_path(proc_self_cgroup: Option<&str>, exists: impl Fn(&Path) -> bool) -> PathBuf {
    proc_self_cgroup
        .and_then(cgroup_v2_path)
        .and_then(|cg| cgroup_candidates(cg).into_iter().find(|p| exists(p)))
        .unwrap_or_else(|| PathBuf::from(SYSTEM_MEMORY_PRESSURE))
}

impl PsiSource {
    /// The file this source stands for. For [`PsiSource::Auto`] this reads
    /// `/proc/self/cgroup` and looks for the cgroup's `memory.pressure`; it does not check
    /// that the file it returns exists or is readable ([`PsiMonitor::start`] does).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::PsiSource;
    /// let p = PsiSource::Auto.resolve()?;
    /// assert!(p.ends_with("memory.pressure") || p.ends_with("memory"));
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn resolve(&self) -> Result<PathBuf, PsiError> {
        Ok(match self {
            PsiSource::System => PathBuf::from(SYSTEM_MEMORY_PRESSURE),
            PsiSource::Path(p) => p.clone(),
            PsiSource::Auto => {
                let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
                auto_path(cgroup.as_deref(), |p| p.is_file())
            }
        })
    }

    /// The source `GRACE_PSI` asks for: unset, empty or `auto` → [`PsiSource::Auto`];
    /// `system` → [`PsiSource::System`]; an absolute path → [`PsiSource::Path`]; `off` (or
    /// `0`, `no`, `false`) → `None`, no monitor. Anything else is an error naming the
    /// variable.
    ///
    /// # Examples
    ///
    /// ```
    /// # std::env::remove_var("GRACE_PSI");
    /// let source = grace::pressure::psi::PsiSource::from_env()?;
    /// assert_eq!(source, Some(grace::pressure::psi::PsiSource::Auto));
    /// # Ok::<(), grace::config::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Option<PsiSource>, ConfigError> {
        PsiSource::from_setting(std::env::var("GRACE_PSI").ok().as_deref())
    }

    /// [`PsiSource::from_env`] on a given value (`None`: the variable is unset).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::PsiSource;
    /// assert_eq!(PsiSource::from_setting(Some("off")), Ok(None));
    /// assert_eq!(PsiSource::from_setting(Some("system")), Ok(Some(PsiSource::System)));
    /// assert!(PsiSource::from_setting(Some("memory")).is_err());
    /// ```
    pub fn from_setting(value: Option<&str>) -> Result<Option<PsiSource>, ConfigError> {
        let Some(raw) = value else {
            return Ok(Some(PsiSource::Auto));
        };
        match raw.trim() {
            "" | "auto" | "1" | "on" | "yes" | "true" => Ok(Some(PsiSource::Auto)),
            "off" | "0" | "no" | "false" => Ok(None),
            "system" => Ok(Some(PsiSource::System)),
            p if p.starts_with('/') => Ok(Some(PsiSource::Path(PathBuf::from(p)))),
            _ => Err(ConfigError {
                var: "GRACE_PSI",
                value: raw.to_string(),
                expected: "off, auto, system, or the absolute path of a pressure file",
            }),
        }
    }
}

/// How a [`PsiMonitor`] learns of pressure.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::PsiMode;
/// assert_ne!(PsiMode::KernelTrigger, PsiMode::Sampled);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PsiMode {
    /// The kernel accepted the trigger and wakes the monitor (`poll` on `POLLPRI`).
    KernelTrigger,
    /// The kernel refused the trigger; the monitor reads the file every
    /// [`Sampler::interval`] and applies the trigger itself.
    Sampled,
}

/// One report of memory pressure, passed to the monitor's handler.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{PsiEvent, PsiMode, Trigger};
/// let event = PsiEvent {
///     path: "/proc/pressure/memory".into(),
///     mode: PsiMode::Sampled,
///     trigger: Trigger::default(),
///     pressure: None,
///     stall: Some(std::time::Duration::from_millis(250)),
/// };
/// assert!(event.stall >= Some(event.trigger.stall()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PsiEvent {
    /// The pressure file the event came from.
    pub path: PathBuf,
    /// Whether the kernel or the sampler fired.
    pub mode: PsiMode,
    /// The trigger that fired.
    pub trigger: Trigger,
    /// The file as read right after the event, or `None` if that read failed.
    pub pressure: Option<Pressure>,
    /// The stall time within the last window, as measured in [`PsiMode::Sampled`] mode (the
    /// kernel does not say how much, only that the threshold was crossed).
    pub stall: Option<Duration>,
}

/// Why a PSI monitor could not start, or a trigger is invalid.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{PsiError, PsiMonitor, PsiSource, Trigger};
/// match PsiMonitor::start(PsiSource::Path("/nonexistent/memory.pressure".into()), Trigger::default(), |_| {}) {
///     Err(PsiError::NotPresent { .. }) => {}
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PsiError {
    /// No pressure information here: the file does not exist (a kernel before 4.20, one built
    /// without `CONFIG_PSI` or booted with `psi=0`), or the platform is not Linux.
    NotPresent {
        /// The file looked for, when one was.
        path: Option<PathBuf>,
        /// What the system said.
        reason: String,
    },
    /// The file exists but may not be read.
    NotPermitted {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The trigger breaks one of the kernel's rules, or does not fit the file.
    InvalidTrigger {
        /// The trigger, in its text form.
        trigger: String,
        /// Which rule.
        reason: &'static str,
    },
    /// Reading the file, or starting the monitor thread, failed otherwise.
    Io {
        /// The file (or the thread's name).
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The file is not in the pressure-stall format.
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        error: ParseError,
    },
}

impl PsiError {
    fn from_io(path: &Path, error: io::Error) -> PsiError {
        if error.kind() == io::ErrorKind::NotFound || sys::is_unsupported(&error) {
            PsiError::NotPresent {
                path: Some(path.to_path_buf()),
                reason: error.to_string(),
            }
        } else if error.kind() == io::ErrorKind::PermissionDenied {
            PsiError::NotPermitted {
                path: path.to_path_buf(),
                error,
            }
        } else {
            PsiError::Io {
                path: path.to_path_buf(),
                error,
            }
        }
    }
}

impl fmt::Display for PsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PsiError::NotPresent { path, reason } => {
                f.write_str("pressure stall information is not available")?;
                if let Some(p) = path {
                    write!(f, " at {}", p.display())?;
                }
                write!(
                    f,
                    " ({reason}); it needs Linux 4.20 or later built with CONFIG_PSI=y (and \
                     `psi=1` on the kernel command line where it is off by default); without \
                     it, call the shrinker from your own memory-pressure logic"
                )
            }
            PsiError::NotPermitted { path, error } => write!(
                f,
                "{} may not be read ({error}); grant the process read access to it (a \
                 container may mask /proc/pressure or mount the cgroup tree without it), or \
                 set GRACE_PSI=off",
                path.display()
            ),
            PsiError::InvalidTrigger { trigger, reason } => write!(
                f,
                "invalid PSI trigger {trigger:?}: {reason} (the form is \
                 `<some|full> <stall µs> <window µs>`, window 500 ms to 10 s)"
            ),
            PsiError::Io { path, error } => write!(
                f,
                "{}: {error}; the memory-pressure monitor cannot run (set GRACE_PSI=off to \
                 run without it, or point GRACE_PSI at another pressure file)",
                path.display()
            ),
            PsiError::Parse { path, error } => write!(
                f,
                "{} is not a pressure stall information file: {error}; point GRACE_PSI (or \
                 PsiSource::Path) at a file such as /proc/pressure/memory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PsiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PsiError::NotPermitted { error, .. } | PsiError::Io { error, .. } => Some(error),
            PsiError::Parse { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Read and parse a pressure file.
fn read_pressure(path: &Path) -> Result<Pressure, PsiError> {
    let text = std::fs::read_to_string(path).map_err(|e| PsiError::from_io(path, e))?;
    Pressure::parse(&text).map_err(|error| PsiError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// A background thread (`grace-psi`) that watches a pressure file and calls a handler when
/// the trigger fires; dropping the monitor stops it.
///
/// # Examples
///
/// ```
/// use grace::pressure::psi::{PsiMonitor, PsiSource, Trigger};
/// // Works where PSI exists; elsewhere the error says why and what to do.
/// match PsiMonitor::start(PsiSource::Auto, Trigger::default(), |event| {
///     eprintln!("memory pressure: {:?}", event.stall);
/// }) {
///     Ok(monitor) => {
///         assert!(monitor.is_running());
///         drop(monitor); // stops and joins the thread
///     }
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug)]
pub struct PsiMonitor {
    path: PathBuf,
    mode: PsiMode,
    trigger: Trigger,
    refusal: Option<io::Error>,
    waker: Arc<sys::Waker>,
    thread: Option<JoinHandle<()>>,
}

/// What the monitor thread needs to build events.
struct Watch<F> {
    path: PathBuf,
    trigger: Trigger,
    handler: F,
}

impl<F: FnMut(PsiEvent)> Watch<F> {
    fn deliver(&mut self, mode: PsiMode, pressure: Option<Pressure>, stall: Option<Duration>) {
        let event = PsiEvent {
            path: self.path.clone(),
            mode,
            trigger: self.trigger,
            pressure,
            stall,
        };
        let handler = &mut self.handler;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(event))).is_err() {
            eprintln!(
                "grace: the PSI handler for {} panicked; the monitor keeps watching",
                self.path.display()
            );
        }
    }

    /// Kernel-trigger mode: wait for `POLLPRI` until woken.
    fn run_trigger(mut self, fd: sys::TriggerFd, waker: &sys::Waker) {
        loop {
            match sys::wait(Some(&fd), waker, sys::MAX_WAIT) {
                Ok(sys::Wait::Event) => {
                    let pressure = read_pressure(&self.path).ok();
                    self.deliver(PsiMode::KernelTrigger, pressure, None);
                }
                Ok(sys::Wait::Timeout) => {}
                Ok(sys::Wait::Woken) => return,
                Ok(sys::Wait::Gone) => {
                    eprintln!(
                        "grace: PSI source {} is gone (its cgroup was removed?); the monitor stops",
                        self.path.display()
                    );
                    return;
                }
                Err(e) => {
                    eprintln!(
                        "grace: poll on PSI trigger {} failed: {e}; the monitor stops",
                        self.path.display()
                    );
                    return;
                }
            }
        }
    }

    /// Sampled mode: read the file every interval and apply the trigger in a [`Sampler`].
    fn run_sampled(mut self, waker: &sys::Waker) {
        let origin = Instant::now();
        let mut sampler = Sampler::new(self.trigger);
        let mut warned = false;
        loop {
            match read_pressure(&self.path) {
                Ok(p) => {
                    let total = p.get(self.trigger.kind).map_or(0, |s| s.total_us);
                    if let Some(stall) = sampler.feed(origin.elapsed(), total) {
                        self.deliver(PsiMode::Sampled, Some(p), Some(stall));
                    }
                }
                Err(PsiError::NotPresent { .. }) => {
                    eprintln!(
                        "grace: PSI source {} is gone; the monitor stops",
                        self.path.display()
                    );
                    return;
                }
                Err(e) if !warned => {
                    eprintln!("grace: sampling PSI failed: {e}; the monitor keeps trying");
                    warned = true;
                }
                Err(_) => {}
            }
            match sys::wait(None, waker, sampler.interval()) {
                Ok(sys::Wait::Woken) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("grace: waiting between PSI samples failed: {e}; the monitor stops");
                    return;
                }
            }
        }
    }
}

impl PsiMonitor {
    /// Watch `source` for `trigger` and call `handler` on the monitor thread for each event.
    ///
    /// The kernel trigger is tried first ([`PsiMode::KernelTrigger`]); if the kernel refuses
    /// it (`EPERM`, `EACCES`, `EINVAL`, `EOPNOTSUPP`, `EROFS`, `EBUSY`: unprivileged with a
    /// window not a multiple of 2 s, a read-only mount, polling disabled) but the file can be
    /// read, the monitor samples the file instead ([`PsiMode::Sampled`]) and
    /// [`PsiMonitor::refusal`] says why. Errors: [`PsiError::NotPresent`] where there is no
    /// PSI (not Linux, old or PSI-less kernel), [`PsiError::NotPermitted`] where the file may
    /// not be read, [`PsiError::InvalidTrigger`] for a `full` trigger on a file without a
    /// `full` line, [`PsiError::Parse`] for a file that is not a pressure file.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use grace::pressure::psi::{PsiMonitor, PsiMode, PsiSource, Trigger};
    /// let monitor = PsiMonitor::start(PsiSource::System, "some 150000 1000000".parse()?, |e| {
    ///     println!("{:?} pressure event on {}", e.mode, e.path.display());
    /// })?;
    /// if monitor.mode() == PsiMode::Sampled {
    ///     println!("sampling: {:?}", monitor.refusal());
    /// }
    /// # Ok::<(), grace::pressure::psi::PsiError>(())
    /// ```
    pub fn start<F>(source: PsiSource, trigger: Trigger, handler: F) -> Result<PsiMonitor, PsiError>
    where
        F: FnMut(PsiEvent) + Send + 'static,
    {
        PsiMonitor::start_inner(source, trigger, handler, true)
    }

    /// Like [`PsiMonitor::start`], but always in [`PsiMode::Sampled`] mode: no trigger is
    /// installed (useful where a kernel trigger's real-time polling thread is not wanted, and
    /// for testing).
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pressure::psi::{PsiMode, PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start_sampled(PsiSource::System, Trigger::default(), |_| {}) {
    ///     assert_eq!(m.mode(), PsiMode::Sampled);
    ///     assert!(m.refusal().is_none());
    /// }
    /// ```
    pub fn start_sampled<F>(
        source: PsiSource,
        trigger: Trigger,
        handler: F,
    ) -> Result<PsiMonitor, PsiError>
    where
        F: FnMut(PsiEvent) + Send + 'static,
    {
        PsiMonitor::start_inner(source, trigger, handler, false)
    }

    fn start_inner<F>(
        source: PsiSource,
        trigger: Trigger,
        handler: F,
        try_kernel: bool,
    ) -> Result<PsiMonitor, PsiError>
    where
        F: FnMut(PsiEvent) + Send + 'static,
    {
        // First, before touching any file: without the system calls (not Linux, Miri, loom)
        // there is no PSI.
        let waker = Arc::new(sys::Waker::new().map_err(|e| PsiError::NotPresent {
            path: None,
            reason: e.to_string(),
        })?);
        let path = source.resolve()?;
        let pressure = read_pressure(&path)?;
        if pressure.get(trigger.kind).is_none() {
            return Err(PsiError::InvalidTrigger {
                trigger: trigger.to_string(),
                reason:
                    "this pressure file has no `full` line (a CPU file of a kernel before 5.13)",
            });
        }
        let (fd, refusal) = if try_kernel {
            match sys::open_trigger(&path, &trigger.kernel_bytes()) {
                Ok(fd) => (Some(fd), None),
                Err(sys::TriggerFailure::Open(e) | sys::TriggerFailure::Write(e))
                    if sys::is_refusal(&e) =>
                {
                    (None, Some(e))
                }
                Err(sys::TriggerFailure::Open(e) | sys::TriggerFailure::Write(e)) => {
                    return Err(PsiError::from_io(&path, e))
                }
            }
        } else {
            (None, None)
        };
        let mode = if fd.is_some() {
            PsiMode::KernelTrigger
        } else {
            PsiMode::Sampled
        };
        let watch = Watch {
            path: path.clone(),
            trigger,
            handler,
        };
        let thread_waker = Arc::clone(&waker);
        let thread = std::thread::Builder::new()
            .name("grace-psi".into())
            .spawn(move || match fd {
                Some(fd) => watch.run_trigger(fd, &thread_waker),
                None => watch.run_sampled(&thread_waker),
            })
            .map_err(|error| PsiError::Io {
                path: PathBuf::from("grace-psi thread"),
                error,
            })?;
        Ok(PsiMonitor {
            path,
            mode,
            trigger,
            refusal,
            waker,
            thread: Some(thread),
        })
    }

    /// Whether the kernel or the sampler watches.
    ///
    /// # Examples
    ///
    /// ```
    /// # use grace::pressure::psi::{PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start(PsiSource::Auto, Trigger::default(), |_| {}) {
    ///     println!("{:?}", m.mode());
    /// }
    /// ```
    pub fn mode(&self) -> PsiMode {
        self.mode
    }

    /// The pressure file watched (what [`PsiSource::resolve`] chose).
    ///
    /// # Examples
    ///
    /// ```
    /// # use grace::pressure::psi::{PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start(PsiSource::System, Trigger::default(), |_| {}) {
    ///     assert_eq!(m.path(), std::path::Path::new("/proc/pressure/memory"));
    /// }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trigger applied.
    ///
    /// # Examples
    ///
    /// ```
    /// # use grace::pressure::psi::{PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start(PsiSource::Auto, Trigger::default(), |_| {}) {
    ///     assert_eq!(*m.trigger(), Trigger::default());
    /// }
    /// ```
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Why the kernel refused the trigger, in [`PsiMode::Sampled`] mode started by
    /// [`PsiMonitor::start`]; `None` otherwise. The usual answers: `EINVAL` for a window
    /// that is not a multiple of 2 s in a process without `CAP_SYS_RESOURCE` (see
    /// [`Trigger::check_unprivileged`]), `EACCES`/`EPERM` where the file may be read but not
    /// written (cgroup files owned by root, kernels before 6.4), `EOPNOTSUPP` where the
    /// kernel's pressure polling is switched off.
    ///
    /// # Examples
    ///
    /// ```
    /// # use grace::pressure::psi::{PsiMode, PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start(PsiSource::Auto, Trigger::default(), |_| {}) {
    ///     assert_eq!(m.refusal().is_some(), m.mode() == PsiMode::Sampled);
    /// }
    /// ```
    pub fn refusal(&self) -> Option<&io::Error> {
        self.refusal.as_ref()
    }

    /// Whether the monitor thread still runs. It stops on its own only when the source goes
    /// away (the watched cgroup is removed) or a system call fails, with a line on standard
    /// error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use grace::pressure::psi::{PsiMonitor, PsiSource, Trigger};
    /// if let Ok(m) = PsiMonitor::start(PsiSource::Auto, Trigger::default(), |_| {}) {
    ///     assert!(m.is_running());
    /// }
    /// ```
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for PsiMonitor {
    /// Wake the monitor thread and wait for it to end; the trigger is destroyed and the
    /// handler dropped before this returns (unless the handler itself drops the monitor, in
    /// which case the thread ends right after the handler returns).
    fn drop(&mut self) {
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str = include_str!("../../tests/data/psi/memory.txt");
    const CPU_OLD: &str = include_str!("../../tests/data/psi/cpu-4.19.txt");
    const CPU: &str = include_str!("../../tests/data/psi/cpu.txt");
    const IO: &str = include_str!("../../tests/data/psi/io.txt");
    const EXTRA_KEYS: &str = include_str!("../../tests/data/psi/memory-extra-keys.txt");
    const EPISODE: &str = include_str!("../../tests/data/psi/episode.txt");

    #[test]
    fn recorded_files_parse() {
        let m = Pressure::parse(MEMORY).unwrap();
        assert_eq!(m.some.total_us, 8_739_123);
        assert_eq!(m.some.avg60, 0.12);
        assert_eq!(m.full.unwrap().total_us, 4_418_220);

        let old = Pressure::parse(CPU_OLD).unwrap();
        assert!(old.full.is_none());
        assert_eq!(old.some.avg10, 75.17);

        let cpu = Pressure::parse(CPU).unwrap();
        assert_eq!(cpu.full.unwrap().total_us, 0);

        let io = Pressure::parse(IO).unwrap();
        assert_eq!(io.full.unwrap().avg300, 0.05);

        let extra = Pressure::parse(EXTRA_KEYS).unwrap();
        assert_eq!(extra.some.total_us, 250_000);
        assert_eq!(extra.full.unwrap().avg10, 4.0);

        // Display writes the file's own format back.
        assert_eq!(Pressure::parse(&m.to_string()).unwrap(), m);
        assert_eq!(m.to_string(), MEMORY);
    }

    #[test]
    fn malformed_files_are_errors_naming_the_line() {
        for (text, line) in [
            ("", 0),
            ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0", 0),
            ("some avg10=0.00 avg60=0.00 avg300=0.00", 1),
            ("some avg10=0.00 avg60=0.00 avg300=0.00 total=-1", 1),
            ("some avg10=0.00 avg60=0.00 avg300=0.00 total=1e9", 1),
            ("some avg10=x avg60=0.00 avg300=0.00 total=0", 1),
            ("some avg10=1. avg60=0.00 avg300=0.00 total=0", 1),
            ("some avg10=NaN avg60=0.00 avg300=0.00 total=0", 1),
            (
                "some avg10=0.00 avg10=0.00 avg60=0.00 avg300=0.00 total=0",
                1,
            ),
            ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0 total=1", 1),
            ("some avg10 avg60=0.00 avg300=0.00 total=0", 1),
            ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0 =3", 1),
            (
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                 some avg10=0.00 avg60=0.00 avg300=0.00 total=0",
                2,
            ),
            (
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nSOME thing",
                2,
            ),
            (
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nirq words",
                2,
            ),
            ("\u{0}\u{1}binary", 1),
        ] {
            let e = Pressure::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
        // Tolerated: blank lines, CRLF, unknown lines of the usual shape.
        let p = Pressure::parse(
            "\r\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=3\r\n\nirq total=9\n",
        )
        .unwrap();
        assert_eq!(p.some.total_us, 3);
    }

    #[test]
    fn trigger_rules_follow_the_kernel() {
        let ms = Duration::from_millis;
        let ok = |s: &str| s.parse::<Trigger>().unwrap();
        let bad = |s: &str| match s.parse::<Trigger>() {
            Err(PsiError::InvalidTrigger { reason, .. }) => reason,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(ok("some 150000 1000000").to_string(), "some 150000 1000000");
        assert_eq!(ok("full 1 500000").stall(), Duration::from_micros(1));
        assert_eq!(
            ok("some 10000000 10000000").window(),
            Duration::from_secs(10)
        );
        assert_eq!(ok("  full   50000   1000000 ").kind(), StallKind::Full);
        for s in [
            "some 1 499999",
            "some 1 10000001",
            "some 0 1000000",
            "some 1000001 1000000",
            "some 150000",
            "some 150000 1000000 1",
            "half 150000 1000000",
            "some -1 1000000",
            "some 1.5 1000000",
            "some 99999999999999999999 1000000",
            "",
        ] {
            assert!(!bad(s).is_empty());
        }
        // Sub-microsecond parts are cut off before the checks.
        let t = Trigger::new(StallKind::Some, Duration::from_nanos(1_500), ms(1000)).unwrap();
        assert_eq!(t.stall_us, 1);
        assert!(Trigger::new(StallKind::Some, Duration::from_nanos(999), ms(1000)).is_err());
        // The unprivileged rule.
        assert!(ok("some 1 2000000").check_unprivileged().is_ok());
        assert!(ok("some 1 10000000").check_unprivileged().is_ok());
        assert!(ok("some 1 3000000").check_unprivileged().is_err());
        assert!(ok("some 1 500000").check_unprivileged().is_err());
        assert!(Trigger::default().check_unprivileged().is_ok());
        // What the kernel receives ends with the NUL it overwrites.
        assert_eq!(
            ok("full 50000 1000000").kernel_bytes(),
            b"full 50000 1000000\0"
        );
    }

    /// The recorded episode, as `(time, some total, full total)`.
    fn episode() -> Vec<(Duration, u64, u64)> {
        EPISODE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let v: Vec<u64> = l.split_whitespace().map(|w| w.parse().unwrap()).collect();
                (Duration::from_millis(v[0]), v[1], v[2])
            })
            .collect()
    }

    fn events(trigger: &str, full: bool) -> Vec<(u128, u128)> {
        let mut s = Sampler::new(trigger.parse().unwrap());
        episode()
            .into_iter()
            .filter_map(|(t, some, f)| {
                s.feed(t, if full { f } else { some })
                    .map(|stall| (t.as_millis(), stall.as_millis()))
            })
            .collect()
    }

    #[test]
    fn sampler_fires_once_per_window_during_the_recorded_episode() {
        // 30 ms of `some` stall per 100 ms from 2.0 s to 5.0 s: 150 ms is reached 500 ms in,
        // then the trigger may fire again one window later while the stall goes on, and not
        // after the stall stops growing.
        assert_eq!(
            events("some 150000 1000000", false),
            [(2500, 150), (3500, 300), (4500, 300)]
        );
        // 10 ms of `full` stall per 100 ms: 100 ms per full window.
        assert_eq!(
            events("full 100000 1000000", true),
            [(3000, 100), (4000, 100), (5000, 100)]
        );
        assert_eq!(events("full 150000 1000000", true), []);
        // A 2 s window: 420 ms after 1.4 s of the episode; the next event could come 2 s
        // later, when the stall no longer grows.
        assert_eq!(events("some 400000 2000000", false), [(3400, 420)]);
        // Nothing during the idle phases, whatever the threshold.
        assert!(events("some 1 500000", false)
            .iter()
            .all(|&(t, _)| (2100..=5000).contains(&t)));
    }

    #[test]
    fn sampler_interpolates_the_window_start() {
        let ms = Duration::from_millis;
        let mut s = Sampler::new("some 250000 1000000".parse().unwrap());
        assert_eq!(s.feed(ms(0), 0), None);
        assert_eq!(s.feed(ms(400), 100_000), None);
        assert_eq!(s.feed(ms(1000), 200_000), None); // 200 ms < 250 ms
                                                     // At 1400 ms the window starts at 400 ms, exactly a sample: growth 350 - 100.
        assert_eq!(s.feed(ms(1400), 350_000), Some(ms(250)));
        let mut s = Sampler::new("some 250000 1000000".parse().unwrap());
        assert_eq!(s.feed(ms(0), 0), None);
        assert_eq!(s.feed(ms(400), 100_000), None);
        assert_eq!(s.feed(ms(1000), 200_000), None);
        // At 1600 ms the window starts at 600 ms: 100 + 100 * 200 / 600 = 133.333 ms.
        assert_eq!(
            s.feed(ms(1600), 383_334),
            Some(Duration::from_micros(250_001))
        );
    }

    #[test]
    fn sampler_restarts_when_the_series_goes_backwards() {
        let ms = Duration::from_millis;
        let mut s = Sampler::new("some 100000 1000000".parse().unwrap());
        assert_eq!(s.feed(ms(0), 1_000_000), None);
        // The counter restarted (a new cgroup): no huge wrapped growth, no event.
        assert_eq!(s.feed(ms(100), 10), None);
        assert_eq!(s.feed(ms(200), 100_010), Some(ms(100)));
        // Time went backwards: history and rate limit restart.
        assert_eq!(s.feed(ms(50), 100_010), None);
        assert_eq!(s.feed(ms(60), 200_010), Some(ms(100)));
        // No growth, no event, even far above the threshold in total.
        assert_eq!(s.feed(ms(5000), 200_010), None);
        // u64 totals near the top do not overflow.
        let mut s = Sampler::new("some 1 500000".parse().unwrap());
        assert_eq!(s.feed(ms(0), u64::MAX - 10), None);
        assert_eq!(s.feed(ms(100), u64::MAX), Some(Duration::from_micros(10)));
    }

    #[test]
    fn sampler_history_stays_bounded() {
        let mut s = Sampler::new("some 1 1000000".parse().unwrap());
        for i in 0..200u64 {
            s.feed(Duration::from_millis(i * 100), i * 10);
        }
        assert!(s.samples.len() <= 12, "{}", s.samples.len());
    }

    #[test]
    fn auto_prefers_the_cgroup_v2_file() {
        let v2 = "0::/system.slice/app.service\n";
        let hybrid =
            "12:memory:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n";
        let v1_only = "4:memory:/process_api/01e8\n1:cpu:/\n";
        assert_eq!(cgroup_v2_path(v2), Some("/system.slice/app.service"));
        assert_eq!(cgroup_v2_path(v1_only), None);
        assert_eq!(cgroup_v2_path("0::/gone (deleted)\n"), None);
        let unified = |p: &Path| p.starts_with("/sys/fs/cgroup/system.slice");
        assert_eq!(
            auto_path(Some(v2), unified),
            Path::new("/sys/fs/cgroup/system.slice/app.service/memory.pressure")
        );
        let only_hybrid = |p: &Path| p.starts_with("/sys/fs/cgroup/unified");
        assert_eq!(
            auto_path(Some(hybrid), only_hybrid),
            Path::new("/sys/fs/cgroup/unified/user.slice/x.scope/memory.pressure")
        );
        assert_eq!(
            auto_path(Some("0::/\n"), |p| p
                == Path::new("/sys/fs/cgroup/memory.pressure")),
            Path::new("/sys/fs/cgroup/memory.pressure")
        );
        let nothing = |_: &Path| false;
        for text in [Some(v2), Some(v1_only), Some(""), None] {
            assert_eq!(auto_path(text, nothing), Path::new(SYSTEM_MEMORY_PRESSURE));
        }
    }

    #[test]
    fn grace_psi_setting() {
        for (v, want) in [
            (None, Some(PsiSource::Auto)),
            (Some(""), Some(PsiSource::Auto)),
            (Some("auto"), Some(PsiSource::Auto)),
            (Some(" off "), None),
            (Some("0"), None),
            (Some("system"), Some(PsiSource::System)),
            (
                Some("/sys/fs/cgroup/a/memory.pressure"),
                Some(PsiSource::Path("/sys/fs/cgroup/a/memory.pressure".into())),
            ),
        ] {
            assert_eq!(PsiSource::from_setting(v).unwrap(), want, "{v:?}");
        }
        let e = PsiSource::from_setting(Some("memory")).unwrap_err();
        assert_eq!(e.var, "GRACE_PSI");
        assert!(e.to_string().contains("memory"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let p = PathBuf::from("/x");
        let not_found = PsiError::from_io(&p, io::Error::from(io::ErrorKind::NotFound));
        assert!(matches!(not_found, PsiError::NotPresent { .. }));
        assert!(not_found.to_string().contains("CONFIG_PSI"));
        let denied = PsiError::from_io(&p, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(denied, PsiError::NotPermitted { .. }));
        assert!(denied.to_string().contains("GRACE_PSI=off"));
        let other = PsiError::from_io(&p, io::Error::other("boom"));
        assert!(matches!(other, PsiError::Io { .. }));
        let parse = PsiError::Parse {
            path: p,
            error: Pressure::parse("").unwrap_err(),
        };
        assert!(std::error::Error::source(&parse).is_some());
    }

    #[test]
    fn a_panicking_handler_does_not_stop_the_monitor() {
        let mut calls = 0;
        let mut watch = Watch {
            path: PathBuf::from(SYSTEM_MEMORY_PRESSURE),
            trigger: Trigger::default(),
            handler: |e: PsiEvent| {
                calls += 1;
                assert_eq!(e.stall, Some(Duration::from_millis(300)));
                panic!("handler failure under test");
            },
        };
        for _ in 0..2 {
            watch.deliver(PsiMode::Sampled, None, Some(Duration::from_millis(300)));
        }
        drop(watch);
        assert_eq!(calls, 2);
    }

    /// Under Miri (and loom, and off Linux) the monitor reports "not present" without
    /// touching the file system; on Linux it starts or explains why not.
    #[test]
    fn start_is_graceful() {
        match PsiMonitor::start(
            PsiSource::Path("/nonexistent/memory.pressure".into()),
            Trigger::default(),
            |_| {},
        ) {
            Err(PsiError::NotPresent { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
