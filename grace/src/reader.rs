//! Reader slots, the registry of them, and the read-side fast path.
//!
//! # The reader word
//!
//! Each registered thread owns one [`Slot`]; its `ctr` word is written only by the owner and
//! read by grace periods. The flavor's global `epoch` word has the same layout, so that an
//! outermost `read_lock` is a single load of the global word and a single store into the slot
//! (liburcu's `_urcu_memb_read_lock` does the same with its `gp.ctr`):
//!
//! ```text
//!  63                          17   16   15                  0
//! +------------------------------+-----+---------------------+
//! |            epoch             |FENCE|       nesting        |
//! +------------------------------+-----+---------------------+
//! ```
//!
//! | word | epoch | FENCE | nesting |
//! |---|---|---|---|
//! | global `epoch` | advanced by one per grace period, by the GP engine only, under its lock | set once at start-up if the barrier mode is `Fence` | always 1 |
//! | slot `ctr`, quiescent | whatever was last copied | copied | 0 |
//! | slot `ctr`, reading | the global epoch when the *outermost* lock ran | copied | depth of nesting |
//!
//! A grace period that advanced the epoch to `E` waits for every slot that is *reading with
//! an epoch other than `E`*: those sections may have started before the grace period did. A
//! slot reading with epoch `E` copied the word after the advance, and so after the updater's
//! heavy barrier, so it cannot see what the updater removed before the grace period.
//!
//! Because the epoch has 47 bits, one advance per grace period suffices: liburcu's memb flavor
//! keeps a single phase bit and must flip it twice per grace period to tell old readers from
//! new ones. The comparison is an inequality, so a wrap of the epoch is harmless unless one
//! thread is preempted between the two instructions of its `read_lock` for 2^47 grace
//! periods. Like the kernel's `rcu_seq` code, we do not take that into account.
//!
//! # Cost
//!
//! On x86-64 (rustc 1.95, release) an outermost `read_lock` + drop compiles to:
//!
//! ```text
//! mov  %fs:LOCAL,%rax      ; this thread's slot (const thread-local, no destructor check)
//! test %rax,%rax ; je register_slow
//! mov  (%rax),%rcx ; test %cx,%cx ; jne nested     ; nesting == 0?
//! mov  global_epoch,%rcx   ; (through the GOT when the static lives in another crate)
//! mov  %rcx,(%rax)         ; copy it: the section has begun
//! test $0x10000,%ecx ; jne fence                  ; FENCE mode only
//! ...
//! decq (%rax)              ; unlock: owner-only, so no lock prefix
//! ```
//!
//! Unlock must re-read the word: guards may be dropped in any order (Rust cannot force LIFO),
//! so a guard cannot store a value remembered when it was created.
//!
//! # Slot lifetime
//!
//! Slots are never freed: the registry is an append-only linked list that grace periods walk
//! without a lock, and a thread that exits gives its slot back for the next new thread
//! (`state` below). That keeps the walk free of any reclamation problem of its own.

use crate::sync::{compiler_fence, fence, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::ptr;

/// Bits of the reader word holding the nesting depth.
pub(crate) const NEST_MASK: u64 = 0xffff;
/// Set in the global word (and so in every copy) when readers must execute a real fence.
pub(crate) const FENCE_BIT: u64 = 1 << 16;
/// The epoch field starts here.
pub(crate) const EPOCH_SHIFT: u32 = 17;
/// One epoch step.
pub(crate) const EPOCH_UNIT: u64 = 1 << EPOCH_SHIFT;
/// The global word before the first grace period (epoch 1, nesting 1).
pub(crate) const INITIAL_EPOCH_WORD: u64 = EPOCH_UNIT | 1;

/// Is the slot word `v` harmless to a grace period that advanced the epoch to `global`'s?
#[inline]
pub(crate) fn quiescent(v: u64, global: u64) -> bool {
    v & NEST_MASK == 0
        || v & NEST_MASK == UNDERFLOW
        || (v >> EPOCH_SHIFT) == (global >> EPOCH_SHIFT)
}

/// The nesting field of a word that an unlock without a matching lock wrapped (a guard dropped
/// twice, through `unsafe`): 0 − 1. Never a real depth: `read_lock` refuses to nest this deep.
/// The thread is then outside any section, so grace periods treat the word as quiescent, its
/// next `read_lock` repairs it and panics naming the mistake ([`Slot::lock`]), and its exit
/// repairs it and says so ([`Slot::repair_underflow`]). Checking in `unlock` itself would cost
/// every read-side section a load-dependent branch (measured: 0.92 → 1.12 ns per section).
pub(crate) const UNDERFLOW: u64 = NEST_MASK;

/// Slot states. Only the owner (or a thread claiming a free slot) writes `state`.
///
/// | state | owned by | grace periods | reused by a new thread |
/// |---|---|---|---|
/// | `FREE` | nobody | skip (ctr is quiescent) | yes, by CAS to `IN_USE` |
/// | `IN_USE` | one live thread | read `ctr` | no |
/// | `ABANDONED` | a thread that exited inside a section, or registered during TLS teardown | read `ctr` | never |
pub(crate) mod state {
    pub(crate) const FREE: u8 = 0;
    pub(crate) const IN_USE: u8 = 1;
    pub(crate) const ABANDONED: u8 = 2;
}

/// One thread's reader record. Cache-line aligned so that readers never share a line.
#[repr(align(128))]
pub(crate) struct Slot {
    /// The reader word (layout in the module docs). Written only by the owning thread.
    pub(crate) ctr: AtomicU64,
    /// See [`state`].
    pub(crate) state: AtomicU8,
    /// Next slot in the registry; written once, before the slot is published.
    next: AtomicPtr<Slot>,
    /// The owner's callback ring, created on its first `call` (see `callback::ring`).
    pub(crate) ring: AtomicPtr<crate::callback::ring::Ring>,
    /// The owner's thread name, for stall warnings and `grace::report()`: set at
    /// registration (a cold path), read only by diagnostics, never by the read side.
    #[cfg(not(loom))]
    name: crate::sync::Mutex<Option<std::sync::Arc<str>>>,
}

impl Slot {
    fn new(state: u8) -> Slot {
        Slot {
            ctr: AtomicU64::new(0),
            state: AtomicU8::new(state),
            next: AtomicPtr::new(ptr::null_mut()),
            ring: AtomicPtr::new(ptr::null_mut()),
            #[cfg(not(loom))]
            name: crate::sync::Mutex::new(None),
        }
    }

    /// Record the name of the thread that owns the slot now (registration only).
    #[cfg(not(loom))]
    pub(crate) fn set_name(&self, name: std::sync::Arc<str>) {
        *crate::sync::lock(&self.name) = Some(name);
    }

    /// The name recorded by the last owner's registration, if any.
    #[cfg(not(loom))]
    pub(crate) fn name(&self) -> Option<std::sync::Arc<str>> {
        crate::sync::lock(&self.name).clone()
    }

    /// Is the owner inside a read-side section now? (For diagnostics: a racy snapshot.)
    #[cfg(not(loom))]
    pub(crate) fn reading(&self) -> bool {
        // Relaxed: a snapshot for a report; nothing is ordered by it.
        self.ctr.load(Ordering::Relaxed) & NEST_MASK != 0
    }

    /// Enter a read-side critical section (outermost or nested). Owner thread only.
    #[inline]
    pub(crate) fn lock(&self, global: &AtomicU64) {
        // Relaxed: only this thread writes ctr.
        let v = self.ctr.load(Ordering::Relaxed);
        if v & NEST_MASK == 0 {
            // Relaxed: the value only has to be *some* epoch; which one is sorted out by the
            // barrier pair below and the grace period's inequality test.
            let g = global.load(Ordering::Relaxed);
            // Release: a grace period that reads this value with Acquire sees every access of
            // our *previous* section too (a later Relaxed store would not carry them: C++20
            // release sequences exclude same-thread stores). A plain `mov` on x86.
            self.ctr.store(g, Ordering::Release);
            if g & FENCE_BIT != 0 {
                // SeqCst: store-buffering pair with the updater's heavy_barrier() in
                // GpEngine::gp_init: either it sees our store, or we see its removal.
                fence(Ordering::SeqCst);
            } else {
                // Pairs with the membarrier in GpEngine::gp_init, which turns this compiler
                // fence into a full fence wherever this thread happens to be.
                compiler_fence(Ordering::SeqCst);
            }
        } else {
            self.lock_nested(v);
        }
    }

    #[inline]
    fn lock_nested(&self, v: u64) {
        if v & NEST_MASK >= UNDERFLOW - 1 {
            self.nesting_error(v);
        }
        // Relaxed: nesting changes nothing a grace period acts on (the epoch stays).
        self.ctr.store(v + 1, Ordering::Relaxed);
    }

    /// Leave a read-side critical section. Owner thread only.
    #[inline]
    pub(crate) fn unlock(&self) {
        // Relaxed: only this thread writes ctr.
        let v = self.ctr.load(Ordering::Relaxed);
        if cfg!(debug_assertions) && v & NEST_MASK == 0 {
            // Debug builds refuse the bad unlock at once. Release builds let the word wrap to
            // `UNDERFLOW`, which costs the fast path nothing and is caught next (see there).
            unlock_underflow();
        }
        // Release: every access of the section happens-before a grace period's Acquire load
        // that sees the quiescent value (GpEngine::gp_wait_readers). This is what lets a grace
        // period skip the trailing membarrier that liburcu issues: on x86 the store is a
        // plain `mov`, and on weakly ordered CPUs a store-release is cheaper than the IPI.
        self.ctr.store(v.wrapping_sub(1), Ordering::Release);
    }

    /// Nesting depth of the owner's current section (0 outside, also after a wrapped unlock:
    /// see [`UNDERFLOW`]). Owner thread only.
    #[inline]
    pub(crate) fn depth(&self) -> u64 {
        match self.ctr.load(Ordering::Relaxed) & NEST_MASK {
            UNDERFLOW => 0,
            d => d,
        }
    }

    /// `read_lock` found the nesting field at its limit: either the word wrapped (an unlock
    /// without a matching lock earlier on this thread), which is repaired before the panic
    /// names it, or sections really nest 65,534 deep. Owner thread only.
    #[cold]
    #[inline(never)]
    fn nesting_error(&self, v: u64) -> ! {
        if v & NEST_MASK == UNDERFLOW {
            self.repair_underflow();
            unlock_underflow();
        }
        nesting_overflow();
    }

    /// Put back the word an unlock without a matching lock wrapped ([`UNDERFLOW`]); returns
    /// whether there was one. Owner thread only (or its exit hook).
    pub(crate) fn repair_underflow(&self) -> bool {
        // Relaxed: only the owner writes ctr; the word was already quiescent to grace periods.
        let v = self.ctr.load(Ordering::Relaxed);
        if v & NEST_MASK != UNDERFLOW {
            return false;
        }
        self.ctr.store(v.wrapping_add(1), Ordering::Relaxed);
        true
    }

    /// Next slot in the registry.
    pub(crate) fn next(&self) -> Option<&Slot> {
        // Acquire: pairs with the Release publication in Readers::push, so the fields of the
        // next slot are initialized when we read them.
        let p = self.next.load(Ordering::Acquire);
        // SAFETY: slots are allocated by Readers::push, leaked, and never freed.
        unsafe { p.as_ref() }
    }
}

#[cold]
#[inline(never)]
fn nesting_overflow() -> ! {
    panic!(
        "grace: read_lock nested more than {} deep (a read guard is probably leaked in a loop)",
        UNDERFLOW - 1
    );
}

#[cold]
#[inline(never)]
fn unlock_underflow() -> ! {
    panic!(
        "grace: RCU read-side unlock without a matching lock on this thread (a read guard was \
         dropped twice, e.g. through `ManuallyDrop::drop` or `ptr::drop_in_place`, or dropped \
         on another thread; release builds report it at the next read_lock)"
    );
}

/// The set of reader slots of one flavor, and the global epoch word they copy.
pub(crate) struct Readers {
    /// The word readers copy at their outermost lock; layout in the module docs.
    pub(crate) epoch: AtomicU64,
    head: AtomicPtr<Slot>,
}

impl Readers {
    /// An empty reader set (const, so that the global RCU flavor can be a `static`).
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Readers {
        Readers {
            epoch: AtomicU64::new(INITIAL_EPOCH_WORD),
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// An empty reader set.
    #[cfg(loom)]
    pub(crate) fn new() -> Readers {
        Readers {
            epoch: AtomicU64::new(INITIAL_EPOCH_WORD),
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Set the FENCE bit of the global word for fence mode. Called once, by the flavor's
    /// initialization, before any slot exists.
    pub(crate) fn set_fence_mode(&self) {
        // Relaxed: happens before any reader registers (registration runs initialization
        // first, and publishes its slot with a Release CAS after it).
        self.epoch.fetch_or(FENCE_BIT, Ordering::Relaxed);
    }

    /// Claim a free slot, or allocate and publish a new one. The slot is `IN_USE`, quiescent.
    pub(crate) fn acquire(&self) -> &'static Slot {
        let mut cur = self.first();
        while let Some(s) = cur {
            // Acquire on success: pairs with the Release in `release`, so the previous owner's
            // last accesses (its ring's producer state) happen-before ours.
            if s.state.load(Ordering::Relaxed) == state::FREE
                && s.state
                    .compare_exchange(
                        state::FREE,
                        state::IN_USE,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return s;
            }
            cur = s.next();
        }
        self.push(state::IN_USE)
    }

    /// Allocate a new slot in `state` and link it at the head of the registry.
    pub(crate) fn push(&self, st: u8) -> &'static Slot {
        let slot: &'static Slot = Box::leak(Box::new(Slot::new(st)));
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            slot.next.store(head, Ordering::Relaxed);
            // Release: publishes the slot's initialized fields to walkers (pairs with the
            // Acquire in `first` and Slot::next). A grace period that misses the new slot is
            // safe: see the "registration" case in GpEngine::gp_init.
            match self.head.compare_exchange_weak(
                head,
                slot as *const Slot as *mut Slot,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return slot,
                Err(h) => head = h,
            }
        }
    }

    /// Give a slot back at thread exit. If the thread is still inside a section (a guard that
    /// outlives the thread's registration, see `ExitHook`), the slot is abandoned instead:
    /// grace periods keep honouring it, and it is never handed to another thread.
    pub(crate) fn release(&self, slot: &Slot) {
        if slot.repair_underflow() {
            crate::sys::report(format_args!(
                "grace: a thread exited after an RCU read-side unlock without a matching lock \
                 (a read guard dropped twice, through unsafe code); its reader word is repaired"
            ));
        }
        if slot.depth() == 0 {
            // Release: pairs with the Acquire CAS in `acquire`.
            slot.state.store(state::FREE, Ordering::Release);
        } else {
            slot.state.store(state::ABANDONED, Ordering::Release);
        }
    }

    /// Mark a slot that nothing will ever give back: grace periods keep honouring it, and it
    /// is never handed to another thread.
    #[cfg_attr(loom, allow(dead_code))] // its user is compiled out under loom
    pub(crate) fn release_abandoned(&self, slot: &Slot) {
        // Release: as in `release`.
        slot.state.store(state::ABANDONED, Ordering::Release);
    }

    /// The first slot of the registry.
    pub(crate) fn first(&self) -> Option<&'static Slot> {
        // Acquire: pairs with the Release CAS in `push`.
        let p = self.head.load(Ordering::Acquire);
        // SAFETY: slots are leaked by `push` and never freed.
        unsafe { p.as_ref() }
    }

    /// Iterate over every slot ever registered.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Slot> {
        let mut cur = self.first();
        std::iter::from_fn(move || {
            let s = cur?;
            cur = s.next();
            Some(s)
        })
    }
}
