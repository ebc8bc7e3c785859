//! Pointer arrays ("blocks"), the type-erased routine that frees a run of objects, and the
//! intrusive lists that cache empty blocks.
//!
//! # Layout
//!
//! ```text
//!  Header (88 bytes)                                                         slots
//! +----+------+----------+-------+-----+-------+-----+------+------+--------+----+----+-----+
//! | ty | free | obj_size | drops | cap | start | len | home | next | cookie | p0 | p1 | ... |
//! +----+------+----------+-------+-----+-------+-----+------+------+--------+----+----+-----+
//! ```
//!
//! Two sizes share the layout: an *array* of [`CAP`] slots, exactly 4 KiB (the kernel's page of
//! pointers), and a *node* of [`NODE_CAP`] slots, 152 bytes, the small allocation that is tried
//! when no array can be had. The slots start at the same offset in both, so code that fills or
//! drains a block never needs to know which it holds; only freeing the memory does (`cap`).
//!
//! | header field | meaning | written by |
//! |---|---|---|
//! | `ty` | the `TypeId` of the objects: the block's *key*, one block holds one type | whoever prepares the block, before anyone else can see it |
//! | `free` | frees a run of the block's objects ([`free_batch`] for that type) | same |
//! | `obj_size` | `size_of` that type, for the pending-bytes counter | same |
//! | `drops` | whether that type has drop glue (user code runs when it is freed) | same |
//! | `cap` | [`CAP`] or [`NODE_CAP`] | [`Block::alloc`], never changed |
//! | `start`, `len` | slots `start..len` hold live pointers once the block is handed off | the hand-off, under the owner's lock |
//! | `home` | the shard whose cache the block returns to | whoever takes it from a shard |
//! | `next` | link in a [`BlockList`] or [`BlockQueue`] | the list's owner (under its lock) |
//! | `cookie` | the grace period a retired block waits for (in a [`BlockQueue`]) | whoever retires it |

use crate::alloc::{try_box, AllocError};
use crate::cookie::Cookie;
use std::any::{Any, TypeId};
use std::mem::{self, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

/// A panic payload caught while freeing, to be re-raised once the batch is done.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// Frees a run of objects of one type: [`free_batch::<T>`] for that `T`.
///
/// # Safety
///
/// Every pointer came from `Box::<T>::into_raw` for the routine's `T`, is freed by nobody else,
/// and a full grace period has elapsed since it was handed to `kvfree` (no reader can reach it).
pub(crate) type FreeFn = unsafe fn(&[*mut ()]) -> Option<Panic>;

/// What a block needs to know about the type of the objects it holds.
///
/// The key is the `TypeId`, not the address of `free`: one function may have several
/// addresses (an instance per codegen unit; Miri even gives each reification its own), and a
/// block keyed by one of them would be missed by callers holding another.
#[derive(Clone, Copy)]
pub(crate) struct Key {
    pub(crate) ty: TypeId,
    pub(crate) free: FreeFn,
    pub(crate) obj_size: usize,
    /// `needs_drop::<T>()`: freeing runs user code (destructors), so it is done only on
    /// callback workers, never inside another `kvfree` call.
    pub(crate) drops: bool,
}

impl Key {
    /// The key of `Box<T>` objects.
    #[inline]
    pub(crate) fn of<T: 'static>() -> Key {
        Key {
            ty: TypeId::of::<T>(),
            free: free_batch::<T>,
            obj_size: mem::size_of::<T>(),
            drops: mem::needs_drop::<T>(),
        }
    }
}

/// Slots in an array: header plus slots fill exactly 4 KiB.
#[cfg(not(any(miri, loom)))]
pub(crate) const CAP: usize = (4096 - mem::size_of::<Header>()) / mem::size_of::<*mut ()>();
/// Tiny under Miri and loom, so that full arrays, hand-offs and refills happen within a few
/// objects (crossbeam-epoch shrinks `MAX_OBJECTS` the same way).
#[cfg(any(miri, loom))]
pub(crate) const CAP: usize = 2;

/// Slots in a node, the small fallback block.
#[cfg(not(any(miri, loom)))]
pub(crate) const NODE_CAP: usize = 8;
/// A node is smaller than an array in every configuration.
#[cfg(any(miri, loom))]
pub(crate) const NODE_CAP: usize = 1;

/// How many objects ahead of the one being freed the batch routine prefetches.
const PREFETCH_AHEAD: usize = 8;

/// The fixed part of every block. `repr(C)`, so that the slots of [`RawBlock`] follow it at
/// [`SLOTS_OFFSET`] whatever the capacity.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) ty: TypeId,
    pub(crate) free: FreeFn,
    pub(crate) obj_size: usize,
    pub(crate) drops: bool,
    pub(crate) cap: usize,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) home: usize,
    pub(crate) next: *mut Header,
    pub(crate) cookie: Cookie,
}

#[repr(C)]
struct RawBlock<const N: usize> {
    header: Header,
    slots: [MaybeUninit<*mut ()>; N],
}

/// Where the slots begin, for both sizes.
const SLOTS_OFFSET: usize = mem::offset_of!(RawBlock<CAP>, slots);
const _: () = assert!(SLOTS_OFFSET == mem::offset_of!(RawBlock<NODE_CAP>, slots));
#[cfg(not(any(miri, loom)))]
const _: () = assert!(mem::size_of::<RawBlock<CAP>>() <= 4096);
#[cfg(not(any(miri, loom)))]
const _: () = assert!(mem::size_of::<RawBlock<{ CAP + 1 }>>() > 4096);
const _: () = assert!(NODE_CAP < CAP);

/// The type of a block that holds nothing yet.
enum Unkeyed {}

/// Which of the two block sizes to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// [`CAP`] slots, 4 KiB.
    Array,
    /// [`NODE_CAP`] slots: the small fallback.
    Node,
}

/// The address of a block's first slot.
///
/// # Safety
///
/// `h` points to the header of a live block (so the slots lie inside its allocation).
#[inline]
pub(crate) unsafe fn slots(h: *mut Header) -> *mut *mut () {
    // SAFETY: per the contract the allocation extends past the header to the slots, which
    // begin at SLOTS_OFFSET in both sizes; `h` carries the provenance of the whole allocation
    // (it came from Box::into_raw of the RawBlock, see Block::alloc).
    unsafe { h.cast::<u8>().add(SLOTS_OFFSET).cast::<*mut ()>() }
}

/// An owned, exclusively held block: the allocation behind it is freed when the `Block` is
/// dropped. The *objects* it points to are never freed by dropping it; only
/// [`Block::free_objects`] does that, after a grace period.
pub(crate) struct Block(NonNull<Header>);

// SAFETY: a Block is the unique owner of its allocation (like a Box), and the objects it
// points to are `Send` (`kvfree` requires `T: Send`), so the block, and the duty of freeing
// them, may move to another thread.
unsafe impl Send for Block {}

impl Block {
    /// Allocate an empty block of `kind`, through the fallible allocator (so failure injection
    /// reaches it).
    pub(crate) fn alloc(kind: Kind) -> Result<Block, AllocError> {
        fn header(cap: usize) -> Header {
            Header {
                ty: TypeId::of::<Unkeyed>(),
                free: free_batch::<Unkeyed>,
                obj_size: 0,
                drops: false,
                cap,
                start: 0,
                len: 0,
                home: 0,
                next: ptr::null_mut(),
                cookie: Cookie::completed(),
            }
        }
        let raw: *mut Header = match kind {
            Kind::Array => Box::into_raw(try_box(
                RawBlock::<CAP> {
                    header: header(CAP),
                    slots: [MaybeUninit::uninit(); CAP],
                },
                "a kvfree pointer array",
            )?)
            .cast(),
            Kind::Node => Box::into_raw(try_box(
                RawBlock::<NODE_CAP> {
                    header: header(NODE_CAP),
                    slots: [MaybeUninit::uninit(); NODE_CAP],
                },
                "a kvfree node",
            )?)
            .cast(),
        };
        // SAFETY: Box::into_raw never returns null.
        Ok(Block(unsafe { NonNull::new_unchecked(raw) }))
    }

    /// Give up ownership; the pointer goes into a lane or a list.
    #[inline]
    pub(crate) fn into_raw(self) -> *mut Header {
        let p = self.0.as_ptr();
        mem::forget(self);
        p
    }

    /// Take back ownership of a block given up by [`Block::into_raw`].
    ///
    /// # Safety
    ///
    /// `p` came from `into_raw` and nobody else owns or accesses it any more.
    #[inline]
    pub(crate) unsafe fn from_raw(p: *mut Header) -> Block {
        debug_assert!(!p.is_null());
        // SAFETY: into_raw's pointer is non-null (it came from a NonNull).
        Block(unsafe { NonNull::new_unchecked(p) })
    }

    fn header(&self) -> &Header {
        // SAFETY: we own the block exclusively and its header is initialized.
        unsafe { self.0.as_ref() }
    }

    fn header_mut(&mut self) -> &mut Header {
        // SAFETY: as in `header`, and `&mut self` makes the access unique.
        unsafe { self.0.as_mut() }
    }

    pub(crate) fn cap(&self) -> usize {
        self.header().cap
    }

    pub(crate) fn kind(&self) -> Kind {
        if self.cap() == CAP {
            Kind::Array
        } else {
            Kind::Node
        }
    }

    /// The block's own memory, for the pending-bytes counter.
    pub(crate) fn bytes(&self) -> usize {
        match self.kind() {
            Kind::Array => mem::size_of::<RawBlock<CAP>>(),
            Kind::Node => mem::size_of::<RawBlock<NODE_CAP>>(),
        }
    }

    pub(crate) fn ty(&self) -> TypeId {
        self.header().ty
    }

    pub(crate) fn obj_size(&self) -> usize {
        self.header().obj_size
    }

    /// Does freeing the objects run user code (drop glue)?
    pub(crate) fn drops(&self) -> bool {
        self.header().drops
    }

    /// The grace period this block waits for, once retired.
    pub(crate) fn cookie(&self) -> Cookie {
        self.header().cookie
    }

    pub(crate) fn set_cookie(&mut self, c: Cookie) {
        self.header_mut().cookie = c;
    }

    /// What freeing the block releases: its objects and itself (the pending-bytes counter).
    pub(crate) fn pending_bytes(&self) -> u64 {
        (self.live() * self.obj_size() + self.bytes()) as u64
    }

    pub(crate) fn home(&self) -> usize {
        self.header().home
    }

    pub(crate) fn set_home(&mut self, shard: usize) {
        self.header_mut().home = shard;
    }

    /// Prepare an empty block for objects of `key`'s type.
    pub(crate) fn set_key(&mut self, key: Key) {
        debug_assert_eq!(self.live(), 0, "re-keying a block with live objects");
        let h = self.header_mut();
        h.ty = key.ty;
        h.free = key.free;
        h.obj_size = key.obj_size;
        h.drops = key.drops;
        h.start = 0;
        h.len = 0;
    }

    /// Objects held: slots `start..len`.
    pub(crate) fn live(&self) -> usize {
        let h = self.header();
        h.len - h.start
    }

    pub(crate) fn is_full(&self) -> bool {
        self.header().len == self.cap()
    }

    /// Append `p` (the block is being filled by its owner, not through a lane). Returns `false`
    /// if the block is full.
    pub(crate) fn push(&mut self, p: *mut ()) -> bool {
        let (len, cap) = (self.header().len, self.cap());
        if len == cap {
            return false;
        }
        // SAFETY: the block is live and owned by us; slot `len` < cap lies inside it.
        unsafe { slots(self.0.as_ptr()).add(len).write(p) };
        self.header_mut().len = len + 1;
        true
    }

    /// Set the live run (the hand-off does this under the owner's lock).
    pub(crate) fn set_run(&mut self, start: usize, len: usize) {
        debug_assert!(start <= len && len <= self.cap());
        let h = self.header_mut();
        h.start = start;
        h.len = len;
    }

    /// Free every live object (running each destructor) and leave the block empty. Returns the
    /// first panic a destructor raised, after every other object has been freed.
    ///
    /// # Safety
    ///
    /// A full grace period has elapsed since each live object was handed to `kvfree` (the
    /// contract of [`FreeFn`]).
    pub(crate) unsafe fn free_objects(&mut self) -> Option<Panic> {
        // SAFETY: the caller's contract covers every live object.
        unsafe { self.free_prefix(self.live()) }
    }

    /// Free the first `n` live objects (all of them if fewer are left); the others stay.
    ///
    /// # Safety
    ///
    /// As for [`Block::free_objects`], for the objects freed.
    pub(crate) unsafe fn free_prefix(&mut self, n: usize) -> Option<Panic> {
        let (start, len, free) = {
            let h = self.header();
            (h.start, h.len, h.free)
        };
        let end = start + n.min(len - start);
        // SAFETY: slots start..end were written (by `push` or a lane) with pointers of the
        // block's type; we own the block, so nobody writes them while this slice lives.
        let objs =
            unsafe { std::slice::from_raw_parts(slots(self.0.as_ptr()).add(start), end - start) };
        // A prefix is a chunk of a larger block being freed a few objects at a time, in step
        // with its owner's allocations: warm the objects of the *next* chunk now, so that by
        // the time it is freed (some calls later) the allocator's header in front of each
        // object, and the object, are in the cache. Bulk frees prefetch within the slice.
        for i in end..(end + PREFETCH_AHEAD).min(len) {
            // SAFETY: slot i < len was written with a pointer, as above.
            let p = unsafe { *slots(self.0.as_ptr()).add(i) };
            prefetch_object(p);
        }
        // SAFETY: the grace period is the caller's contract; the pointers are of `free`'s type
        // (a block holds one key) and this block is their only holder.
        let panic = unsafe { free(objs) };
        self.header_mut().start = end;
        panic
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        debug_assert_eq!(
            self.live(),
            0,
            "a block dropped with live objects leaks them"
        );
        let p = self.0.as_ptr();
        // SAFETY: the block was allocated by Block::alloc as a RawBlock of the size its `cap`
        // names (cap never changes), and we own it; dropping the Box frees exactly that.
        unsafe {
            match self.kind() {
                Kind::Array => drop(Box::from_raw(p.cast::<RawBlock<CAP>>())),
                Kind::Node => drop(Box::from_raw(p.cast::<RawBlock<NODE_CAP>>())),
            }
        }
    }
}

/// An intrusive stack of empty blocks, linked through `Header::next`. Pushing and popping
/// never allocate, so a list may be used under a shard lock.
pub(crate) struct BlockList {
    head: *mut Header,
    len: usize,
}

// SAFETY: the list owns the blocks linked into it, and blocks are Send.
unsafe impl Send for BlockList {}

impl BlockList {
    pub(crate) const fn new() -> BlockList {
        BlockList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, b: Block) {
        let p = b.into_raw();
        // SAFETY: we now own `p` (into_raw gave it up) and it is live.
        unsafe { (*p).next = self.head };
        self.head = p;
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<Block> {
        if self.head.is_null() {
            return None;
        }
        let p = self.head;
        // SAFETY: `p` is a block this list owns (pushed and not popped since).
        self.head = unsafe { (*p).next };
        self.len -= 1;
        // SAFETY: unlinked just above, so the list no longer owns or touches it.
        Some(unsafe { Block::from_raw(p) })
    }
}

impl Drop for BlockList {
    fn drop(&mut self) {
        while let Some(b) = self.pop() {
            drop(b);
        }
    }
}

/// An intrusive FIFO of blocks, linked through `Header::next`: a thread's retired blocks,
/// oldest (earliest cookie) first. Never allocates.
pub(crate) struct BlockQueue {
    head: *mut Header,
    tail: *mut Header,
    len: usize,
}

// SAFETY: as for BlockList: the queue owns the blocks linked into it, and blocks are Send.
unsafe impl Send for BlockQueue {}

impl BlockQueue {
    pub(crate) const fn new() -> BlockQueue {
        BlockQueue {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push_back(&mut self, b: Block) {
        let p = b.into_raw();
        // SAFETY: we now own `p`, and `tail` (if any) is a block this queue owns.
        unsafe {
            (*p).next = ptr::null_mut();
            match self.tail.as_mut() {
                Some(t) => t.next = p,
                None => self.head = p,
            }
        }
        self.tail = p;
        self.len += 1;
    }

    /// The cookie of the oldest block.
    pub(crate) fn front_cookie(&self) -> Option<Cookie> {
        // SAFETY: `head` is a block this queue owns (or null).
        unsafe { self.head.as_ref() }.map(|h| h.cookie)
    }

    /// The oldest block, if `ready` says its cookie has expired.
    pub(crate) fn pop_front_if(&mut self, ready: impl FnOnce(Cookie) -> bool) -> Option<Block> {
        // SAFETY: `head` is a block this queue owns (or null).
        let h = unsafe { self.head.as_ref()? };
        if !ready(h.cookie) {
            return None;
        }
        self.pop_front()
    }

    pub(crate) fn pop_front(&mut self) -> Option<Block> {
        if self.head.is_null() {
            return None;
        }
        let p = self.head;
        // SAFETY: `p` is a block this queue owns.
        self.head = unsafe { (*p).next };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        // SAFETY: unlinked just above, so the queue no longer owns or touches it.
        Some(unsafe { Block::from_raw(p) })
    }
}

impl Drop for BlockQueue {
    fn drop(&mut self) {
        debug_assert_eq!(self.len, 0, "a retired queue dropped with blocks in it");
        while let Some(b) = self.pop_front() {
            // Their objects are leaked rather than freed without a grace period.
            std::mem::forget(b);
        }
    }
}

/// Hint the CPU to start loading the cache line at `p`.
#[inline(always)]
fn prefetch(p: *const ()) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `prefetcht0` is a hint: it never faults, whatever the address (a freed or
    // dangling one included), and changes no state the program can observe. SSE, which it
    // needs, is part of the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Prefetch an object that is about to be freed: the word in front of it too, where common
/// allocators (glibc's malloc among them) keep the chunk size that `free` reads first.
#[inline]
fn prefetch_object(p: *mut ()) {
    prefetch(p.cast::<u8>().wrapping_sub(8).cast());
    prefetch(p);
}

/// The [`FreeFn`] for `T`: drop each `Box<T>` in `objs`, prefetching
/// [`PREFETCH_AHEAD`] objects ahead (the "prefetch while freeing" asked for in the
/// `rcu_pending` review: the objects went cold during the grace period, and their destructors
/// and the allocator's bookkeeping would otherwise miss the cache one object at a time).
///
/// A destructor that panics does not stop the batch: the object is already counted as freed
/// (its memory is released by the unwinding `Box`), the rest are freed, and the first payload
/// is returned for the caller to re-raise.
///
/// # Safety
///
/// See [`FreeFn`].
pub(crate) unsafe fn free_batch<T>(objs: &[*mut ()]) -> Option<Panic> {
    let mut next = 0;
    let mut first: Option<Panic> = None;
    while next < objs.len() {
        let run = catch_unwind(AssertUnwindSafe(|| {
            while let Some(&p) = objs.get(next) {
                if mem::size_of::<T>() != 0 {
                    if let Some(&ahead) = objs.get(next + PREFETCH_AHEAD) {
                        prefetch_object(ahead);
                    }
                }
                // Past it before its destructor runs: if that panics, the unwinding Box has
                // released it, and it must not be freed a second time.
                next += 1;
                // SAFETY: the caller's contract: `p` is a `Box<T>` pointer that nobody else
                // frees, and no reader can reach it any more.
                drop(unsafe { Box::from_raw(p.cast::<T>()) });
            }
        }));
        if let Err(payload) = run {
            match first {
                None => first = Some(payload),
                Some(_) => drop_payload(payload),
            }
        }
    }
    first
}

/// Drop a second panic payload; its own `Drop` may panic too, and such a payload is leaked
/// rather than allowed to unwind out of the batch.
fn drop_payload(payload: Panic) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        mem::forget(again);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>, u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            assert_eq!(self.1, 0xfeed, "dropped a corrupted object");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn raw<T>(v: T) -> *mut () {
        Box::into_raw(Box::new(v)).cast()
    }

    #[test]
    fn array_fills_to_cap_and_frees_each_object_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut b = Block::alloc(Kind::Array).unwrap();
        assert_eq!((b.cap(), b.kind(), b.live()), (CAP, Kind::Array, 0));
        b.set_key(Key::of::<Counted>());
        for _ in 0..CAP {
            assert!(b.push(raw(Counted(drops.clone(), 0xfeed))));
        }
        assert!(b.is_full());
        let extra = raw(Counted(drops.clone(), 0xfeed));
        assert!(!b.push(extra), "a full block takes no more");
        // SAFETY: `extra` was never handed out; free it ourselves.
        unsafe { free_batch::<Counted>(&[extra]) };
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        // SAFETY: no reader exists in this test.
        assert!(unsafe { b.free_objects() }.is_none());
        assert_eq!(drops.load(Ordering::Relaxed), CAP + 1);
        assert_eq!(b.live(), 0);
        // Freeing again frees nothing (the run is empty).
        // SAFETY: as above.
        assert!(unsafe { b.free_objects() }.is_none());
        assert_eq!(drops.load(Ordering::Relaxed), CAP + 1);
        assert_eq!(Arc::strong_count(&drops), 1);
    }

    #[test]
    fn node_is_smaller_and_a_run_frees_only_its_slots() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut n = Block::alloc(Kind::Node).unwrap();
        assert_eq!((n.cap(), n.kind()), (NODE_CAP, Kind::Node));
        assert!(n.bytes() < Block::alloc(Kind::Array).unwrap().bytes());
        n.set_key(Key::of::<Counted>());
        while !n.is_full() {
            assert!(n.push(raw(Counted(drops.clone(), 0xfeed))));
        }
        assert_eq!(n.live(), NODE_CAP);
        // SAFETY: no reader exists in this test (and for the prefix below).
        unsafe { n.free_objects() };
        assert_eq!(drops.load(Ordering::Relaxed), NODE_CAP);
        let mut b = Block::alloc(Kind::Array).unwrap();
        b.set_key(Key::of::<Counted>());
        for _ in 0..CAP {
            assert!(b.push(raw(Counted(drops.clone(), 0xfeed))));
        }
        // SAFETY: as above.
        assert!(unsafe { b.free_prefix(1) }.is_none());
        assert_eq!(
            (b.live(), drops.load(Ordering::Relaxed)),
            (CAP - 1, NODE_CAP + 1)
        );
        // SAFETY: as above; asking for more than is left frees what is left.
        assert!(unsafe { b.free_prefix(CAP) }.is_none());
        assert_eq!(
            (b.live(), drops.load(Ordering::Relaxed)),
            (0, NODE_CAP + CAP)
        );
    }

    #[test]
    fn zero_sized_and_no_drop_types() {
        static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Zst;
        impl Drop for Zst {
            fn drop(&mut self) {
                ZST_DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let z: Vec<*mut ()> = (0..3).map(|_| raw(Zst)).collect();
        // SAFETY: fresh boxes, freed once, no readers.
        unsafe { free_batch::<Zst>(&z) };
        assert_eq!(ZST_DROPS.load(Ordering::Relaxed), 3);
        let plain: Vec<*mut ()> = (0..20u64).map(|i| raw([i; 8])).collect();
        // SAFETY: as above (Miri's leak check proves each was freed).
        unsafe { free_batch::<[u64; 8]>(&plain) };
    }

    #[test]
    fn a_panicking_destructor_does_not_stop_the_batch() {
        struct Bomb(Arc<AtomicUsize>, bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
                if self.1 {
                    panic!("bomb");
                }
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let objs: Vec<*mut ()> = (0..6)
            .map(|i| raw(Bomb(drops.clone(), i == 1 || i == 4)))
            .collect();
        // SAFETY: fresh boxes, freed once, no readers.
        let p = unsafe { free_batch::<Bomb>(&objs) }.expect("the first panic comes back");
        assert_eq!(p.downcast_ref::<&str>(), Some(&"bomb"));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            6,
            "every destructor ran once"
        );
        assert_eq!(Arc::strong_count(&drops), 1, "every object was freed");
    }

    #[test]
    fn list_is_lifo_and_frees_what_it_holds() {
        let mut l = BlockList::new();
        for home in 0..3 {
            let mut b = Block::alloc(Kind::Array).unwrap();
            b.set_home(home);
            l.push(b);
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.pop().map(|b| b.home()), Some(2));
        assert_eq!(l.len(), 2);
        drop(l); // the other two are freed (Miri's leak check)
    }

    #[test]
    fn queue_is_fifo_and_pops_only_what_is_ready() {
        let mut q = BlockQueue::new();
        for (home, c) in [(0, 10), (1, 20), (2, 30)] {
            let mut b = Block::alloc(Kind::Node).unwrap();
            b.set_home(home);
            b.set_cookie(Cookie::from_seq(c));
            q.push_back(b);
        }
        assert_eq!(q.len(), 3);
        assert!(
            q.pop_front_if(|c| c.seq < 10).is_none(),
            "the oldest is not ready"
        );
        assert_eq!(q.pop_front_if(|c| c.seq <= 20).map(|b| b.home()), Some(0));
        assert_eq!(q.pop_front_if(|c| c.seq <= 20).map(|b| b.home()), Some(1));
        assert!(q.pop_front_if(|c| c.seq <= 20).is_none());
        let mut b = Block::alloc(Kind::Node).unwrap();
        b.set_home(3);
        q.push_back(b);
        assert_eq!(q.pop_front().map(|b| b.home()), Some(2));
        assert_eq!(q.pop_front().map(|b| b.home()), Some(3));
        assert!(q.pop_front().is_none() && q.len() == 0);
    }

    #[test]
    fn allocation_failure_is_reported() {
        let _fail = crate::alloc::inject(crate::alloc::FailurePlan::Nth(1));
        let e = Block::alloc(Kind::Array).err().expect("injected");
        assert_eq!(e.what, "a kvfree pointer array");
        assert!(Block::alloc(Kind::Node).is_ok());
    }
}
