//! Build script for grace-bench: detects liburcu (memb flavour) and, when it
//! is present, compiles the C peer `csrc/urcu_peer.c` and links liburcu.
//!
//! It never fails the build: without liburcu (or when compiling the peer
//! fails) it prints a cargo warning and the liburcu rows are skipped at run
//! time. Setting `GRACE_BENCH_NO_LIBURCU=1` forces the no-liburcu build. Installing liburcu
//! later re-runs the probe on the next build (see `INSTALL_WITNESSES`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install it with: apt-get install liburcu-dev";

/// Files a package manager rewrites on every install or removal (dpkg's and rpm's databases,
/// pkg-config's directories): a change to any of them re-runs the liburcu probe, so that a
/// rebuild after `apt-get install liburcu-dev` picks the library up instead of replaying the
/// stale "not found" warning. Without any of them (another system), `cargo clean -p
/// grace-bench` forces the probe.
const INSTALL_WITNESSES: &[&str] = &[
    "/var/lib/dpkg/status",
    "/var/lib/rpm",
    "/usr/lib/pkgconfig",
    "/usr/local/lib/pkgconfig",
    "/usr/share/pkgconfig",
    "/usr/lib/x86_64-linux-gnu/pkgconfig",
    "/usr/lib/aarch64-linux-gnu/pkgconfig",
];

/// What the probe found: include directories, library directories and the
/// libraries to link.
struct Urcu {
    include_dirs: Vec<PathBuf>,
    lib_dirs: Vec<PathBuf>,
    libs: Vec<String>,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/urcu_peer.c");
    println!("cargo:rerun-if-env-changed=GRACE_BENCH_NO_LIBURCU");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    // Installing (or removing) liburcu-dev must re-run the probe: watch what a package manager
    // changes, among the paths that exist (cargo re-runs at every build for a missing one).
    for path in INSTALL_WITNESSES {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }

    match configure() {
        Ok(()) => {
            println!("cargo:rustc-cfg=grace_liburcu");
            println!("cargo:rustc-env=GRACE_BENCH_LIBURCU_REASON=");
        }
        Err(reason) => {
            // One line: both directives end at the first newline.
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("cargo:warning={reason}: the liburcu peer is skipped in benchmarks ({INSTALL_HINT})");
            println!("cargo:rustc-env=GRACE_BENCH_LIBURCU_REASON={reason}");
        }
    }
}

/// Finds liburcu, compiles the peer and emits the link lines, or says why not.
fn configure() -> Result<(), String> {
    if env::var_os("GRACE_BENCH_NO_LIBURCU").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err("liburcu disabled by GRACE_BENCH_NO_LIBURCU".into());
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("liburcu-dev not found (the liburcu peer is Linux-only)".into());
    }
    let urcu = probe_pkg_config()
        .or_else(probe_paths)
        .ok_or_else(|| "liburcu-dev not found".to_string())?;

    let mut build = cc::Build::new();
    build
        .file("csrc/urcu_peer.c")
        .opt_level(2)
        .warnings(true)
        .flag_if_supported("-std=gnu11");
    for dir in &urcu.include_dirs {
        build.include(dir);
    }
    build
        .try_compile("grace_urcu_peer")
        .map_err(|e| format!("liburcu-dev found but compiling csrc/urcu_peer.c failed ({e})"))?;

    for dir in &urcu.lib_dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &urcu.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    Ok(())
}

/// Asks `pkg-config` (or `$PKG_CONFIG`) about `liburcu-memb`.
fn probe_pkg_config() -> Option<Urcu> {
    let pkg_config = env::var_os("PKG_CONFIG").unwrap_or_else(|| "pkg-config".into());
    let exists = Command::new(&pkg_config)
        .args(["--exists", "liburcu-memb"])
        .status()
        .ok()?;
    if !exists.success() {
        return None;
    }
    let out = Command::new(&pkg_config)
        .args(["--cflags", "--libs", "liburcu-memb"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut urcu = Urcu {
        include_dirs: Vec::new(),
        lib_dirs: Vec::new(),
        libs: Vec::new(),
    };
    for tok in text.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-I") {
            urcu.include_dirs.push(dir.into());
        } else if let Some(dir) = tok.strip_prefix("-L") {
            urcu.lib_dirs.push(dir.into());
        } else if let Some(lib) = tok.strip_prefix("-l") {
            urcu.libs.push(lib.into());
        }
    }
    if !urcu.libs.iter().any(|l| l == "urcu-memb") {
        urcu.libs.push("urcu-memb".into());
    }
    if !urcu.libs.iter().any(|l| l == "urcu-common") {
        urcu.libs.push("urcu-common".into());
    }
    Some(urcu)
}

/// The Debian multiarch tuple for the target, e.g. `x86_64-linux-gnu`.
fn multiarch() -> Option<String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let tuple = match (arch.as_str(), env_.as_str()) {
        ("x86_64", "gnu") => "x86_64-linux-gnu",
        ("x86", "gnu") => "i386-linux-gnu",
        ("aarch64", "gnu") => "aarch64-linux-gnu",
        ("arm", "gnu") => "arm-linux-gnueabihf",
        ("riscv64", "gnu") => "riscv64-linux-gnu",
        ("powerpc64", "gnu") => "powerpc64le-linux-gnu",
        ("s390x", "gnu") => "s390x-linux-gnu",
        _ => return None,
    };
    Some(tuple.to_string())
}

/// Fallback without pkg-config: looks for the header and the library in the
/// usual system directories.
fn probe_paths() -> Option<Urcu> {
    let ma = multiarch();
    let mut inc_roots = vec![
        PathBuf::from("/usr/local/include"),
        PathBuf::from("/usr/include"),
    ];
    let mut lib_roots = vec![
        PathBuf::from("/usr/local/lib"),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/usr/lib"),
    ];
    if let Some(ma) = &ma {
        inc_roots.insert(1, Path::new("/usr/include").join(ma));
        lib_roots.insert(0, Path::new("/usr/lib").join(ma));
    }
    let inc = inc_roots
        .into_iter()
        .find(|d| d.join("urcu/urcu-memb.h").is_file())?;
    let lib = lib_roots.into_iter().find(|d| {
        ["liburcu-memb.so", "liburcu-memb.a"]
            .iter()
            .any(|f| d.join(f).exists())
    })?;
    Some(Urcu {
        include_dirs: vec![inc],
        lib_dirs: vec![lib],
        libs: vec!["urcu-memb".into(), "urcu-common".into()],
    })
}
