//! One measurement in a child process: this binary re-executed as `grace bench <suite>
//! --child IMPL ...` (a hidden flag), which runs that one measurement and prints its result as
//! one JSON object. The `flood` and `list` suites measure this way: peak RSS is a property of
//! a process, the allocator keeps the memory it was given, and some libraries' counters are
//! process-wide, so a measurement made after another in the same process would inherit them.

use crate::ui;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::process::{Command, ExitCode};

/// Re-execute this binary with `args` and read its answer, one JSON object on standard output.
pub fn run<T: DeserializeOwned>(args: &[String]) -> Result<T, String> {
    run_with_stderr(args).map(|(answer, _)| answer)
}

/// [`run`], also returning what the child wrote on standard error (the flood suite's children
/// put their `grace::report()` there).
pub fn run_with_stderr<T: DeserializeOwned>(args: &[String]) -> Result<(T, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start the child process: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().last().unwrap_or("").chars().take(200).collect();
        return Err(format!("the child process failed ({}): {tail}", out.status));
    }
    let answer =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable child answer: {e}"))?;
    Ok((answer, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A measurement result a child process answers with: it records whether it ran in a process
/// of its own, and carries a note for caveats.
pub trait Answer: DeserializeOwned {
    /// It was measured in a child process.
    fn mark_isolated(&mut self);
    /// Its caveat, if any.
    fn note_mut(&mut self) -> &mut Option<String>;
}

/// Measure in a child process (this binary re-run with `args`); if that fails, measure
/// `here`, in this process, and say so first in the result's note.
pub fn measure<T: Answer>(args: &[&str], here: impl FnOnce() -> T) -> T {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match run::<T>(&args) {
        Ok(mut r) => {
            r.mark_isolated();
            r
        }
        Err(why) => {
            let mut r = here();
            let first = format!("run in the parent process ({why})");
            let note = r.note_mut();
            *note = Some(match note.take() {
                Some(n) => format!("{first}; {n}"),
                None => first,
            });
            r
        }
    }
}

/// [`Answer`] for result types with `isolated` and `note` fields.
macro_rules! answer_with_fields {
    ($($t:ty),*) => {$(
        impl Answer for $t {
            fn mark_isolated(&mut self) {
                self.isolated = true;
            }
            fn note_mut(&mut self) -> &mut Option<String> {
                &mut self.note
            }
        }
    )*};
}

answer_with_fields!(
    grace_bench::ListResult,
    grace_bench::RculistResult,
    grace_bench::MapResult,
    grace_bench::ResizeResult
);

/// The child's side: print `result` as one JSON object on standard output (`what` names it in
/// the error message should that fail).
pub fn answer<T: Serialize>(what: &str, result: &T) -> ExitCode {
    match serde_json::to_string(result) {
        Ok(text) => {
            ui::out(&format!("{text}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("grace: cannot serialize the {what} result: {e}");
            ExitCode::from(3)
        }
    }
}
