//! The background half of SRCU, shared by every domain: one driver thread that advances the
//! grace periods of domains with callbacks or polled cookies outstanding, and a few workers
//! that invoke ready callbacks.
//!
//! The driver never waits for a reader: each visit runs a domain's state machine as far as it
//! goes without blocking ([`super::gp::Machine::advance`]) and schedules the next visit (soon
//! when hurried or expedited, with a growing delay while readers stay inside). A domain whose
//! reader sleeps for seconds therefore costs the driver one short check per visit, and every
//! other domain is served on time. Callbacks run on the workers, never on the driver, so a
//! slow callback delays callbacks, not grace periods.
//!
//! Workers take one shard at a time (`busy`), so a shard's callbacks run in FIFO order, which
//! `barrier`'s entrained markers rely on.

use super::DomainRef;
use crate::sync::{lock, wait, wait_timeout, Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    /// Set on SRCU callback workers, so that an SRCU `barrier` from a callback is refused.
    pub(crate) static IN_SRCU_CALLBACK: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

pub(crate) struct Service {
    ctl: Mutex<Ctl>,
    wake: Condvar,
    work: Mutex<VecDeque<(DomainRef, usize)>>,
    work_ready: Condvar,
}

#[derive(Default)]
struct Ctl {
    /// Domains that used `call` or `start_poll`; each entry holds a reference.
    domains: Vec<DomainRef>,
    /// Someone asked for a visit since the driver last looked.
    kicked: bool,
}

static SERVICE: OnceLock<&'static Service> = OnceLock::new();

/// The service, started on first use.
pub(crate) fn service() -> &'static Service {
    SERVICE.get_or_init(|| {
        let svc: &'static Service = Box::leak(Box::new(Service {
            ctl: Mutex::new(Ctl::default()),
            wake: Condvar::new(),
            work: Mutex::new(VecDeque::new()),
            work_ready: Condvar::new(),
        }));
        let workers = crate::rcu::config().workers;
        // Workers first, the driver last (see callback::engine::Engine::start).
        for i in 0..workers.max(1) {
            spawn(format!("grace-srcu-cb{i}"), move || svc.worker());
        }
        spawn("grace-srcu-gp".into(), move || svc.driver());
        svc
    })
}

/// The service if something has started it (diagnostics and the shrinker never start it).
pub(crate) fn started() -> Option<&'static Service> {
    SERVICE.get().copied()
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    crate::sys::thread_starting();
    if let Err(e) = std::thread::Builder::new().name(name.clone()).spawn(f) {
        // Without this thread no SRCU callback would ever run; refusing loudly beats losing
        // them.
        panic!("grace: cannot start thread {name}: {e}");
    }
}

impl Service {
    /// Serve `d` from now on (idempotent per domain: the caller registers once).
    pub(crate) fn register(&self, d: DomainRef) {
        let mut ctl = lock(&self.ctl);
        ctl.domains.push(d);
        ctl.kicked = true;
        self.wake.notify_one();
    }

    /// Stop serving the domain `d` points at; drops the service's reference.
    pub(crate) fn deregister(&self, d: &DomainRef) {
        let removed = {
            let mut ctl = lock(&self.ctl);
            let pos = ctl.domains.iter().position(|x| x.same(d));
            pos.map(|i| ctl.domains.swap_remove(i))
        };
        // Dropped outside the lock: it may be the last reference, and freeing a domain
        // takes its own locks.
        drop(removed);
    }

    /// The registered domains now (references taken under the lock; whoever drops the last
    /// one frees that domain, outside the lock).
    pub(crate) fn domains(&self) -> Vec<DomainRef> {
        lock(&self.ctl).domains.clone()
    }

    /// Ask the driver to visit the registered domains now.
    pub(crate) fn kick(&self) {
        let mut ctl = lock(&self.ctl);
        ctl.kicked = true;
        self.wake.notify_one();
    }

    /// Queue shard `idx` of domain `d` for a worker.
    pub(crate) fn queue(&self, jobs: impl IntoIterator<Item = (DomainRef, usize)>) {
        let mut q = lock(&self.work);
        let before = q.len();
        q.extend(jobs);
        if q.len() > before {
            self.work_ready.notify_all();
        }
    }

    fn driver(&self) {
        let mut due: Option<Instant> = None;
        loop {
            let domains: Vec<DomainRef> = {
                let mut ctl = lock(&self.ctl);
                loop {
                    if std::mem::take(&mut ctl.kicked) {
                        break;
                    }
                    match due {
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                break;
                            }
                            ctl = wait_timeout(&self.wake, ctl, d - now);
                        }
                        None => {
                            ctl = wait(&self.wake, ctl);
                        }
                    }
                }
                ctl.domains.clone()
            };
            due = None;
            let now = Instant::now();
            for d in &domains {
                if let Some(next) = d.visit(now, self) {
                    due = Some(due.map_or(next, |x| x.min(next)));
                }
            }
        }
    }

    fn worker(&self) {
        IN_SRCU_CALLBACK.with(|c| c.set(true));
        crate::callback::mark_worker();
        loop {
            let (d, idx) = {
                let mut q = lock(&self.work);
                loop {
                    if let Some(job) = q.pop_front() {
                        break job;
                    }
                    q = wait(&self.work_ready, q);
                }
            };
            d.invoke_shard(idx);
        }
    }
}
