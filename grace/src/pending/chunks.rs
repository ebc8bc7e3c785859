//! Storage for pending object pointers: a stack of fixed-size chunks ("pages of pointers"),
//! and the linked fallback used when no chunk can be had.
//!
//! # Layout
//!
//! ```text
//!            head (newest, being filled)                     tail (oldest)
//!            ┌──────────────────────┐   ┌──────────────────┐   ┌──────────────────┐
//!  cursor ──►│ next │ len* │ p p p _ _│──►│ next │ len │ p p p│──►│ next │ len │ p p │──► null
//!            └──────────────────────┘   └──────────────────┘   └──────────────────┘
//!   * the head's `len` is stale while it is the head: the stack's cursor is the truth
//! ```
//!
//! A [`Chunk`] is a header (`next`, `len`) and `CAP` pointer slots; with the production
//! capacity a chunk is exactly 4 KiB, a page of 510 pointers. Pushing writes at the cursor
//! and bumps it: no walk, no branch on depth. Only at a chunk boundary does a push need a new
//! chunk, which the *caller* supplies ([`ChunkStack::push_chunk`]): the stack never allocates,
//! so it can live under a shard lock while allocation happens outside it.
//!
//! Every chunk carries its own `len`, so chunks in the middle of a stack may be partly filled.
//! That is what makes [`ChunkStack::append`] O(1) (link the other stack below the tail) and lets
//! expired batches be merged into one per shard, the property a radix tree (the kernel's
//! `rcu_pending` uses one) lacks: radix trees do not merge in O(1). The measured comparison with a radix tree
//! is in `grace-bench/benches/pending_storage.rs` and the `pending` module docs.
//!
//! [`NodeList`] is the fallback: one small [`Node`] (two words) per object, linked. A node is
//! 16 bytes where a chunk is 4096, so it can still be had when chunks cannot; it, too, is
//! allocated by the caller, outside any lock.
//!
//! Object pointers are stored type-erased (`*mut ()`); the owner casts them back. Nothing here
//! dereferences an object pointer.

use crate::alloc::{try_box, AllocError};
use std::mem::MaybeUninit;
use std::ptr::{self, addr_of_mut, NonNull};

/// One pointer slot; initialized for indices below the chunk's length.
type Slot = MaybeUninit<*mut ()>;

/// A fixed-size block of object pointers, linked to the next (older) block of its stack.
#[repr(C)]
pub struct Chunk<const CAP: usize> {
    /// The next, older chunk of the stack, or null.
    next: *mut Chunk<CAP>,
    /// Slots `0..len` are initialized. Stale while the chunk is its stack's head (the stack's
    /// cursor is the truth then); brought up to date by [`ChunkStack::seal`].
    len: usize,
    slots: [Slot; CAP],
}

/// Number of pointer slots that make a [`Chunk`] exactly `bytes` long (header included).
///
/// # Examples
///
/// ```
/// use grace::pending::layout::slots_for;
/// assert_eq!(slots_for(512), 62); // 512-byte nodes
/// ```
pub const fn slots_for(bytes: usize) -> usize {
    (bytes - 2 * std::mem::size_of::<usize>()) / std::mem::size_of::<*mut ()>()
}

/// The address of a chunk's first slot, derived from the raw chunk pointer (no reference is
/// created, so pointers derived earlier from the same chunk stay valid).
///
/// # Safety
///
/// `c` points to a live chunk.
#[inline]
unsafe fn slots_of<const CAP: usize>(c: *mut Chunk<CAP>) -> *mut Slot {
    // SAFETY: per the contract `c` is live; addr_of_mut! only computes the field's address.
    unsafe { addr_of_mut!((*c).slots).cast::<Slot>() }
}

/// An empty, owned chunk not yet part of a stack: what the caller allocates outside the lock
/// and hands to [`ChunkStack::push_chunk`]. Dropping it frees the memory.
pub struct FreeChunk<const CAP: usize>(NonNull<Chunk<CAP>>);

// SAFETY: a FreeChunk owns its (empty) chunk exclusively; moving it between threads moves
// plain memory.
unsafe impl<const CAP: usize> Send for FreeChunk<CAP> {}

impl<const CAP: usize> FreeChunk<CAP> {
    /// Allocate an empty chunk, fallibly (honours [`crate::alloc::inject`]).
    ///
    /// # Errors
    ///
    /// When the allocator (or an injected failure) refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::layout::FreeChunk;
    /// let c: FreeChunk<510> = FreeChunk::try_new().expect("memory");
    /// drop(c); // frees it
    /// ```
    pub fn try_new() -> Result<FreeChunk<CAP>, AllocError> {
        let chunk = try_box(
            Chunk::<CAP> {
                next: ptr::null_mut(),
                len: 0,
                slots: [const { MaybeUninit::uninit() }; CAP],
            },
            "a pending-object chunk",
        )?;
        // SAFETY: Box::into_raw never returns null.
        Ok(FreeChunk(unsafe {
            NonNull::new_unchecked(Box::into_raw(chunk))
        }))
    }

    /// Take a chunk whose objects have all been moved out back as a free chunk.
    ///
    /// # Safety
    ///
    /// `c` came from [`FreeChunk::into_raw`] (a `Box<Chunk>`) and is owned by the caller, who
    /// no longer needs any slot of it.
    unsafe fn from_raw(c: *mut Chunk<CAP>) -> FreeChunk<CAP> {
        // SAFETY: per the contract `c` is live and ours; resetting the header makes it empty.
        unsafe {
            (*c).next = ptr::null_mut();
            (*c).len = 0;
            FreeChunk(NonNull::new_unchecked(c))
        }
    }

    fn into_raw(self) -> *mut Chunk<CAP> {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl<const CAP: usize> Drop for FreeChunk<CAP> {
    fn drop(&mut self) {
        // SAFETY: the chunk came from a Box (try_new) and is owned by this FreeChunk alone;
        // its slots hold no live objects (a FreeChunk is empty by construction).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// Free chunks linked through their own `next` field: a place to put chunks that needs no
/// allocation, so emptied chunks can be collected under a lock and freed (or kept as spares)
/// after it.
///
/// # Examples
///
/// ```
/// use grace::pending::layout::{ChunkPile, FreeChunk};
/// let mut pile: ChunkPile<62> = ChunkPile::new();
/// pile.push(FreeChunk::try_new().unwrap());
/// assert_eq!(pile.len(), 1);
/// let c = pile.pop().unwrap();
/// drop((c, pile)); // both free what they hold
/// ```
pub struct ChunkPile<const CAP: usize> {
    head: *mut Chunk<CAP>,
    len: usize,
}

// SAFETY: the pile owns its (empty) chunks exclusively.
unsafe impl<const CAP: usize> Send for ChunkPile<CAP> {}

impl<const CAP: usize> Default for ChunkPile<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> ChunkPile<CAP> {
    /// An empty pile.
    pub const fn new() -> ChunkPile<CAP> {
        ChunkPile {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pile holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add a chunk.
    pub fn push(&mut self, chunk: FreeChunk<CAP>) {
        let c = chunk.into_raw();
        // SAFETY: `c` is a live, empty chunk we now own; it links to the previous top.
        unsafe { (*c).next = self.head };
        self.head = c;
        self.len += 1;
    }

    /// Take a chunk.
    pub fn pop(&mut self) -> Option<FreeChunk<CAP>> {
        let c = self.head;
        if c.is_null() {
            return None;
        }
        // SAFETY: `c` is a live chunk of the pile; unlinking it hands it to the caller.
        unsafe {
            self.head = (*c).next;
            self.len -= 1;
            Some(FreeChunk::from_raw(c))
        }
    }

    /// Move every chunk of `other` into this pile (O(length of `other`)).
    pub fn take_all(&mut self, other: &mut ChunkPile<CAP>) {
        while let Some(c) = other.pop() {
            self.push(c);
        }
    }
}

impl<const CAP: usize> Drop for ChunkPile<CAP> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

/// A LIFO stack of object pointers stored in chunks; see the module docs for the layout.
///
/// # Examples
///
/// ```
/// use grace::pending::layout::{ChunkStack, FreeChunk};
/// let mut s: ChunkStack<4> = ChunkStack::new();
/// let mut objs = [0u8; 6];
/// for o in objs.iter_mut() {
///     let p = o as *mut u8 as *mut ();
///     if let Err(p) = s.try_push(p) {
///         s.push_chunk(FreeChunk::try_new().unwrap()); // at a chunk boundary
///         s.try_push(p).unwrap();
///     }
/// }
/// assert_eq!(s.len(), 6);
/// let mut seen = 0;
/// s.drain(|_| seen += 1, drop);
/// assert_eq!(seen, 6);
/// ```
pub struct ChunkStack<const CAP: usize> {
    /// Newest chunk (the one being filled), or null.
    head: *mut Chunk<CAP>,
    /// Oldest chunk, or null; kept for O(1) [`append`](ChunkStack::append).
    tail: *mut Chunk<CAP>,
    /// The head's next free slot; equals `end` when the head is full; null with no head.
    cursor: *mut Slot,
    /// One past the head's last slot; null with no head.
    end: *mut Slot,
    /// Objects stored, in all chunks.
    len: usize,
}

// SAFETY: the stack owns its chunks exclusively (nothing else points into them); the object
// pointers it stores are opaque values here. Whether the *objects* may move between threads is
// decided by the owner (Pending requires T: Send).
unsafe impl<const CAP: usize> Send for ChunkStack<CAP> {}

impl<const CAP: usize> Default for ChunkStack<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> ChunkStack<CAP> {
    /// An empty stack with no chunk.
    pub const fn new() -> ChunkStack<CAP> {
        assert!(CAP > 0, "a chunk needs at least one slot");
        ChunkStack {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            cursor: ptr::null_mut(),
            end: ptr::null_mut(),
            len: 0,
        }
    }

    /// Objects stored.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no object is stored (there may still be an empty chunk).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Store `p` at the cursor, or give it back if the head chunk is full (or there is none):
    /// then the caller supplies a chunk with [`push_chunk`](ChunkStack::push_chunk) and retries.
    #[inline]
    pub fn try_push(&mut self, p: *mut ()) -> Result<(), *mut ()> {
        if self.cursor == self.end {
            return Err(p);
        }
        // SAFETY: cursor != end, so the cursor is a slot of the live head chunk (both are null
        // only together); bumping it stays within the chunk or lands one past its end.
        unsafe {
            self.cursor.write(MaybeUninit::new(p));
            self.cursor = self.cursor.add(1);
        }
        self.len += 1;
        Ok(())
    }

    /// Whether the next [`try_push`](ChunkStack::try_push) needs a new chunk.
    #[inline]
    pub fn needs_chunk(&self) -> bool {
        self.cursor == self.end
    }

    /// Make `chunk` the new head; pushes continue there.
    pub fn push_chunk(&mut self, chunk: FreeChunk<CAP>) {
        self.seal();
        let c = chunk.into_raw();
        // SAFETY: `c` is a live, empty chunk we now own; the old head (or null) goes below it.
        unsafe {
            (*c).next = self.head;
            self.cursor = slots_of(c);
            self.end = self.cursor.add(CAP);
        }
        if self.tail.is_null() {
            self.tail = c;
        }
        self.head = c;
    }

    /// Bring the head chunk's `len` up to date with the cursor.
    #[inline]
    fn seal(&mut self) {
        if !self.head.is_null() {
            // SAFETY: the head is live and the cursor points into it (or one past its end).
            unsafe {
                (*self.head).len = self.cursor.offset_from(slots_of(self.head)) as usize;
            }
        }
    }

    /// Make `c` the head (or empty the stack when `c` is null), with the cursor after its last
    /// initialized slot. `c`'s `len` must be up to date (it is not the old head).
    ///
    /// # Safety
    ///
    /// `c` is null or a live chunk of this stack whose `len` is exact.
    unsafe fn set_head(&mut self, c: *mut Chunk<CAP>) {
        self.head = c;
        if c.is_null() {
            self.tail = ptr::null_mut();
            self.cursor = ptr::null_mut();
            self.end = ptr::null_mut();
        } else {
            // SAFETY: per the contract `c` is live with `len <= CAP` initialized slots.
            unsafe {
                let s = slots_of(c);
                self.cursor = s.add((*c).len);
                self.end = s.add(CAP);
            }
        }
    }

    /// Take the most recently pushed object. An emptied head chunk above it is unlinked and
    /// handed to `spent` (so the caller decides where, and outside which lock, it is freed).
    pub fn pop(&mut self, spent: &mut impl FnMut(FreeChunk<CAP>)) -> Option<*mut ()> {
        self.pop_slot(spent).map(|(p, _)| p)
    }

    /// [`pop`](ChunkStack::pop), also returning the address of the slot the object came from.
    fn pop_slot(&mut self, spent: &mut impl FnMut(FreeChunk<CAP>)) -> Option<(*mut (), *mut Slot)> {
        if self.len == 0 {
            return None;
        }
        loop {
            // SAFETY: len > 0, so there is a head chunk and the cursor points into it.
            let start = unsafe { slots_of(self.head) };
            if self.cursor != start {
                // SAFETY: the slot just below the cursor is initialized (pushed, not yet
                // popped); it is read once and the cursor moves below it.
                let p = unsafe {
                    self.cursor = self.cursor.sub(1);
                    self.cursor.read().assume_init()
                };
                self.len -= 1;
                return Some((p, self.cursor));
            }
            // The head is empty but objects remain: they are in older chunks.
            let old = self.head;
            // SAFETY: `old` is live; its successor is non-null (len > 0 and `old` holds none)
            // and, not being the head, has an exact `len`.
            unsafe {
                let next = (*old).next;
                debug_assert!(!next.is_null());
                self.set_head(next);
                spent(FreeChunk::from_raw(old));
            }
        }
    }

    /// Remove and return the first object (newest first) for which `pred` is true, moving the
    /// newest object into its slot. `pred` sees every stored object until one matches.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(*mut ()) -> bool,
        spent: &mut impl FnMut(FreeChunk<CAP>),
    ) -> Option<*mut ()> {
        self.seal();
        let mut c = self.head;
        let mut found: Option<*mut Slot> = None;
        'scan: while !c.is_null() {
            // SAFETY: `c` is a live chunk of this stack with an exact `len` (sealed above), so
            // its slots below `len` are initialized.
            unsafe {
                let s = slots_of(c);
                for i in (0..(*c).len).rev() {
                    if pred(s.add(i).read().assume_init()) {
                        found = Some(s.add(i));
                        break 'scan;
                    }
                }
                c = (*c).next;
            }
        }
        let slot = found?;
        // SAFETY: `slot` is an initialized slot of a live chunk (found above).
        let wanted = unsafe { slot.read().assume_init() };
        // The matched chunk holds at least the match, so `pop` unlinks no chunk at or below it.
        let (top, top_slot) = self.pop_slot(spent).expect("the stack holds the match");
        if top_slot != slot {
            // SAFETY: `slot` is still a slot of a live chunk (see above); it receives the
            // object popped from the top, so every stored object keeps exactly one slot.
            unsafe { slot.write(MaybeUninit::new(top)) };
        }
        Some(wanted)
    }

    /// Move every object and chunk of `older` below this stack's tail, in O(1). Pushes keep
    /// going into this stack's head.
    pub fn append(&mut self, mut older: ChunkStack<CAP>) {
        older.seal();
        if older.head.is_null() {
            return;
        }
        if self.head.is_null() {
            std::mem::swap(self, &mut older);
        } else {
            // SAFETY: our tail is a live chunk with no successor; it adopts `older`'s chain.
            unsafe { (*self.tail).next = older.head };
            self.tail = older.tail;
            self.len += older.len;
        }
        older.forget_chunks();
    }

    /// Move up to `max` chunks from the top of this stack (the newest, the head first) into a
    /// new stack, with every object they hold, in O(`max`): a bounded slice of work that can be
    /// taken under a lock and processed after it. The rest stays here. Chunks holding no
    /// object are taken along without counting, so the slice is empty only if the stack is.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::pending::layout::{ChunkStack, FreeChunk};
    /// let mut s: ChunkStack<2> = ChunkStack::new();
    /// let mut objs = [0u8; 5];
    /// for o in objs.iter_mut() {
    ///     let p = o as *mut u8 as *mut ();
    ///     if let Err(p) = s.try_push(p) {
    ///         s.push_chunk(FreeChunk::try_new().unwrap());
    ///         s.try_push(p).unwrap();
    ///     }
    /// }
    /// let mut top = s.split_top(2); // the head (1 object) and the chunk below it (2)
    /// assert_eq!((top.len(), s.len()), (3, 2));
    /// top.drain(|_| {}, drop);
    /// s.drain(|_| {}, drop);
    /// ```
    pub fn split_top(&mut self, max: usize) -> ChunkStack<CAP> {
        let mut out = ChunkStack::new();
        if self.head.is_null() || max == 0 {
            return out;
        }
        self.seal();
        let first = self.head;
        // SAFETY: `first` and every chunk reached through `next` are live chunks of this stack
        // with exact lengths (sealed above). The chain is cut after `last`: the chunks from
        // `first` to `last` move to `out` (owned by it alone from here), the rest stays, and
        // the object counts move with them.
        unsafe {
            let mut last = first;
            let mut objs = (*first).len;
            let mut taken = 1;
            // Empty chunks (left by pops) do not count: a non-empty stack yields objects.
            while (taken < max || objs == 0) && !(*last).next.is_null() {
                last = (*last).next;
                objs += (*last).len;
                taken += 1;
            }
            let rest = (*last).next;
            (*last).next = ptr::null_mut();
            out.head = first;
            out.tail = last;
            out.cursor = slots_of(first).add((*first).len);
            out.end = slots_of(first).add(CAP);
            out.len = objs;
            if rest.is_null() {
                self.forget_chunks();
            } else {
                let tail = self.tail;
                let len = self.len - objs;
                self.set_head(rest);
                self.tail = tail;
                self.len = len;
            }
        }
        out
    }

    /// Leave the stack empty without freeing anything (its chunks now belong elsewhere).
    fn forget_chunks(&mut self) {
        self.head = ptr::null_mut();
        self.tail = ptr::null_mut();
        self.cursor = ptr::null_mut();
        self.end = ptr::null_mut();
        self.len = 0;
    }

    /// Visit every object once (newest chunk first), then hand each chunk, emptied, to
    /// `spent`. The stack is left empty.
    ///
    /// `each` must not unwind: the objects after a panicking one would stay in their chunks,
    /// which are then freed with the stack (the objects are leaked, never freed twice).
    pub fn drain(&mut self, mut each: impl FnMut(*mut ()), mut spent: impl FnMut(FreeChunk<CAP>)) {
        self.seal();
        let mut c = self.head;
        self.forget_chunks();
        while !c.is_null() {
            // SAFETY: `c` was a chunk of this stack with an exact `len` (sealed); the stack
            // was emptied above, so we own the chain and read each initialized slot once.
            unsafe {
                let s = slots_of(c);
                for i in 0..(*c).len {
                    each(s.add(i).read().assume_init());
                }
                let next = (*c).next;
                spent(FreeChunk::from_raw(c));
                c = next;
            }
        }
    }

    /// Visit every object without removing it (newest chunk first).
    pub fn for_each(&mut self, mut each: impl FnMut(*mut ())) {
        self.seal();
        let mut c = self.head;
        while !c.is_null() {
            // SAFETY: live chunks of this stack with exact lengths (sealed above).
            unsafe {
                let s = slots_of(c);
                for i in 0..(*c).len {
                    each(s.add(i).read().assume_init());
                }
                c = (*c).next;
            }
        }
    }

    /// Number of chunks linked (for statistics and tests).
    pub fn chunks(&self) -> usize {
        let mut n = 0;
        let mut c = self.head;
        while !c.is_null() {
            n += 1;
            // SAFETY: live chunks of this stack.
            c = unsafe { (*c).next };
        }
        n
    }
}

impl<const CAP: usize> Drop for ChunkStack<CAP> {
    /// Frees the chunks. Objects still stored are leaked (never freed): the owner empties a
    /// stack before dropping it, so this only happens after a panic.
    fn drop(&mut self) {
        self.drain(|_| {}, drop);
    }
}

/// One fallback record: an object pointer and a link, 16 bytes.
pub struct Node {
    next: *mut Node,
    obj: *mut (),
}

/// An owned fallback node not yet in a list (allocated outside the lock).
pub struct FreeNode(Box<Node>);

// SAFETY: the node owns no object until it is linked; it is plain memory.
unsafe impl Send for FreeNode {}

impl FreeNode {
    /// Allocate a node for object `obj`, fallibly (honours [`crate::alloc::inject`]).
    ///
    /// # Errors
    ///
    /// When the allocator (or an injected failure) refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::alloc::{inject, FailurePlan};
    /// use grace::pending::layout::FreeNode;
    /// let _fail = inject(FailurePlan::Nth(1));
    /// assert!(FreeNode::try_new(std::ptr::null_mut()).is_err());
    /// assert!(FreeNode::try_new(std::ptr::null_mut()).is_ok());
    /// ```
    pub fn try_new(obj: *mut ()) -> Result<FreeNode, AllocError> {
        try_box(
            Node {
                next: ptr::null_mut(),
                obj,
            },
            "a pending-object fallback node",
        )
        .map(FreeNode)
    }
}

/// A LIFO list of fallback nodes with a tail pointer for O(1) [`append`](NodeList::append).
///
/// # Examples
///
/// ```
/// use grace::pending::layout::{FreeNode, NodeList};
/// let mut x = 1u32;
/// let mut l = NodeList::new();
/// l.push(FreeNode::try_new(&mut x as *mut u32 as *mut ()).unwrap());
/// assert_eq!(l.len(), 1);
/// let (p, node) = l.pop().unwrap();
/// drop(node); // frees the node, not the object
/// assert_eq!(p, &mut x as *mut u32 as *mut ());
/// ```
pub struct NodeList {
    head: *mut Node,
    tail: *mut Node,
    len: usize,
}

// SAFETY: the list owns its nodes exclusively; object pointers are opaque values here.
unsafe impl Send for NodeList {}

impl Default for NodeList {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeList {
    /// An empty list.
    pub const fn new() -> NodeList {
        NodeList {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    /// Objects stored.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Link `node` (and the object it carries) at the front.
    pub fn push(&mut self, node: FreeNode) {
        let n = Box::into_raw(node.0);
        // SAFETY: `n` is a fresh node we now own.
        unsafe { (*n).next = self.head };
        if self.tail.is_null() {
            self.tail = n;
        }
        self.head = n;
        self.len += 1;
    }

    /// Unlink the front node: its object, and the node itself for the caller to free (or
    /// reuse) outside the lock.
    pub fn pop(&mut self) -> Option<(*mut (), FreeNode)> {
        let n = self.head;
        if n.is_null() {
            return None;
        }
        // SAFETY: `n` is a live node of this list; unlinking it transfers it to the caller.
        unsafe {
            self.head = (*n).next;
            if self.head.is_null() {
                self.tail = ptr::null_mut();
            }
            self.len -= 1;
            let obj = (*n).obj;
            (*n).next = ptr::null_mut();
            Some((obj, FreeNode(Box::from_raw(n))))
        }
    }

    /// Remove the first object (front first) for which `pred` is true.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(*mut ()) -> bool,
    ) -> Option<(*mut (), FreeNode)> {
        let mut prev: *mut Node = ptr::null_mut();
        let mut n = self.head;
        while !n.is_null() {
            // SAFETY: `n` (and `prev`, when non-null) are live nodes of this list; unlinking
            // `n` keeps the chain and the tail consistent and transfers `n` to the caller.
            unsafe {
                if pred((*n).obj) {
                    let next = (*n).next;
                    if prev.is_null() {
                        self.head = next;
                    } else {
                        (*prev).next = next;
                    }
                    if self.tail == n {
                        self.tail = prev;
                    }
                    self.len -= 1;
                    (*n).next = ptr::null_mut();
                    let obj = (*n).obj;
                    return Some((obj, FreeNode(Box::from_raw(n))));
                }
                prev = n;
                n = (*n).next;
            }
        }
        None
    }

    /// Move every node of `older` behind this list's tail, in O(1).
    pub fn append(&mut self, mut older: NodeList) {
        if older.head.is_null() {
            return;
        }
        if self.head.is_null() {
            std::mem::swap(self, &mut older);
        } else {
            // SAFETY: our tail is a live node with no successor; it adopts `older`'s chain.
            unsafe { (*self.tail).next = older.head };
            self.tail = older.tail;
            self.len += older.len;
        }
        older.head = ptr::null_mut();
        older.tail = ptr::null_mut();
        older.len = 0;
    }

    /// Visit every object once, freeing the nodes as it goes. The list is left empty.
    ///
    /// `each` must not unwind (see [`ChunkStack::drain`]).
    pub fn drain(&mut self, mut each: impl FnMut(*mut ())) {
        while let Some((obj, node)) = self.pop() {
            each(obj);
            drop(node);
        }
    }

    /// Visit every object without removing it.
    pub fn for_each(&self, mut each: impl FnMut(*mut ())) {
        let mut n = self.head;
        while !n.is_null() {
            // SAFETY: live nodes of this list.
            unsafe {
                each((*n).obj);
                n = (*n).next;
            }
        }
    }
}

impl Drop for NodeList {
    /// Frees the nodes; objects still listed are leaked, as for [`ChunkStack`].
    fn drop(&mut self) {
        self.drain(|_| {});
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::alloc::{inject, FailurePlan};
    use std::collections::HashSet;

    /// Distinct, valid-looking object pointers: addresses into a vector the test owns.
    fn objs(n: usize) -> (Vec<u64>, Vec<*mut ()>) {
        let mut backing = vec![0u64; n];
        let ptrs = backing
            .iter_mut()
            .map(|x| x as *mut u64 as *mut ())
            .collect();
        (backing, ptrs)
    }

    fn push_all<const CAP: usize>(s: &mut ChunkStack<CAP>, ptrs: &[*mut ()]) {
        for &p in ptrs {
            if let Err(p) = s.try_push(p) {
                s.push_chunk(FreeChunk::try_new().unwrap());
                s.try_push(p).unwrap();
            }
        }
    }

    #[test]
    fn chunks_are_exactly_their_nominal_size() {
        assert_eq!(std::mem::size_of::<Chunk<{ slots_for(512) }>>(), 512);
        assert_eq!(std::mem::size_of::<Chunk<{ slots_for(4096) }>>(), 4096);
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }

    #[test]
    fn push_then_drain_visits_each_once_across_chunks() {
        let (_b, ptrs) = objs(11);
        let mut s: ChunkStack<3> = ChunkStack::new();
        assert!(s.needs_chunk());
        push_all(&mut s, &ptrs);
        assert_eq!(s.len(), 11);
        assert_eq!(s.chunks(), 4);
        let mut seen = HashSet::new();
        let mut freed = 0;
        s.drain(|p| assert!(seen.insert(p as usize)), |_| freed += 1);
        assert_eq!(seen.len(), 11);
        assert_eq!(freed, 4);
        assert!(s.is_empty() && s.chunks() == 0);
    }

    #[test]
    fn pop_is_lifo_and_gives_back_emptied_chunks() {
        let (_b, ptrs) = objs(7);
        let mut s: ChunkStack<2> = ChunkStack::new();
        push_all(&mut s, &ptrs);
        let mut spent = Vec::new();
        for &want in ptrs.iter().rev() {
            assert_eq!(s.pop(&mut |c| spent.push(c)), Some(want));
        }
        assert_eq!(s.pop(&mut |c| spent.push(c)), None);
        // Three chunks emptied below the head; the last (now empty) head stays linked.
        assert_eq!(spent.len(), 3);
        assert_eq!(s.chunks(), 1);
        // The empty head is reused by the next push.
        s.try_push(ptrs[0]).unwrap();
        assert_eq!(s.pop(&mut |c| spent.push(c)), Some(ptrs[0]));
    }

    #[test]
    fn pushes_continue_into_a_partly_filled_chunk_after_pops() {
        let (_b, ptrs) = objs(6);
        let mut s: ChunkStack<4> = ChunkStack::new();
        push_all(&mut s, &ptrs[..5]); // chunks: [4 full] <- [1]
        let mut spent = Vec::new();
        s.pop(&mut |c| spent.push(c));
        s.pop(&mut |c| spent.push(c)); // head emptied and unlinked; now at 3 of 4
        assert_eq!(spent.len(), 1);
        s.try_push(ptrs[5]).unwrap(); // fits without a new chunk
        assert!(s.needs_chunk());
        let mut seen = Vec::new();
        s.drain(|p| seen.push(p), drop);
        seen.sort();
        let mut want = vec![ptrs[0], ptrs[1], ptrs[2], ptrs[5]];
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn append_links_in_constant_time_and_keeps_partial_chunks() {
        let (_b, ptrs) = objs(10);
        let mut a: ChunkStack<3> = ChunkStack::new();
        let mut b: ChunkStack<3> = ChunkStack::new();
        push_all(&mut a, &ptrs[..4]); // [3] <- [1]
        push_all(&mut b, &ptrs[4..9]); // [3] <- [2]
        a.append(b);
        assert_eq!(a.len(), 9);
        assert_eq!(a.chunks(), 4);
        // Pushing continues in a's head (it had room for two more).
        a.try_push(ptrs[9]).unwrap();
        // Appending onto an empty stack takes the other over whole.
        let mut e: ChunkStack<3> = ChunkStack::new();
        e.append(a);
        assert_eq!(e.len(), 10);
        let mut spent = Vec::new();
        let mut popped = HashSet::new();
        while let Some(p) = e.pop(&mut |c| spent.push(c)) {
            assert!(popped.insert(p as usize));
        }
        assert_eq!(popped.len(), 10);
        // Appending an empty stack changes nothing.
        e.append(ChunkStack::new());
        assert!(e.is_empty());
    }

    #[test]
    fn remove_where_moves_the_top_into_the_hole() {
        let (_b, ptrs) = objs(9);
        let mut s: ChunkStack<4> = ChunkStack::new();
        push_all(&mut s, &ptrs);
        let mut spent = Vec::new();
        // A match deep in the oldest chunk.
        let got = s.remove_where(|p| p == ptrs[1], &mut |c| spent.push(c));
        assert_eq!(got, Some(ptrs[1]));
        // The top itself.
        assert_eq!(
            s.remove_where(|p| p == ptrs[8], &mut |c| spent.push(c)),
            Some(ptrs[8])
        );
        // No match.
        assert_eq!(s.remove_where(|_| false, &mut |c| spent.push(c)), None);
        assert_eq!(s.len(), 7);
        let mut left = HashSet::new();
        s.drain(|p| assert!(left.insert(p as usize)), drop);
        let want: HashSet<usize> = ptrs
            .iter()
            .filter(|&&p| p != ptrs[1] && p != ptrs[8])
            .map(|&p| p as usize)
            .collect();
        assert_eq!(left, want);
    }

    #[test]
    fn node_list_push_pop_append_remove() {
        let (_b, ptrs) = objs(5);
        let mut a = NodeList::new();
        let mut b = NodeList::new();
        a.push(FreeNode::try_new(ptrs[0]).unwrap());
        a.push(FreeNode::try_new(ptrs[1]).unwrap());
        b.push(FreeNode::try_new(ptrs[2]).unwrap());
        b.push(FreeNode::try_new(ptrs[3]).unwrap());
        a.append(b);
        a.push(FreeNode::try_new(ptrs[4]).unwrap());
        assert_eq!(a.len(), 5);
        let (p, _n) = a.remove_where(|p| p == ptrs[2]).unwrap(); // the tail
        assert_eq!(p, ptrs[2]);
        let (p, _n) = a.remove_where(|p| p == ptrs[0]).unwrap(); // the middle
        assert_eq!(p, ptrs[0]);
        assert!(a.remove_where(|_| false).is_none());
        // Appending after removing the tail must link from the new tail.
        let mut c = NodeList::new();
        c.push(FreeNode::try_new(ptrs[2]).unwrap());
        a.append(c);
        let mut seen = Vec::new();
        a.for_each(|p| seen.push(p));
        assert_eq!(seen, vec![ptrs[4], ptrs[1], ptrs[3], ptrs[2]]);
        let mut drained = 0;
        a.drain(|_| drained += 1);
        assert_eq!(drained, 4);
        assert!(a.pop().is_none());
    }

    #[test]
    fn allocation_failures_are_reported() {
        let _fail = inject(FailurePlan::AllAfter(0));
        assert!(FreeChunk::<8>::try_new().is_err());
        assert!(FreeNode::try_new(ptr::null_mut()).is_err());
    }

    #[test]
    fn dropping_a_stack_frees_its_chunks_without_touching_objects() {
        let (_b, ptrs) = objs(5);
        let mut s: ChunkStack<2> = ChunkStack::new();
        push_all(&mut s, &ptrs);
        drop(s); // Miri's leak check proves the chunks are freed
        let mut l = NodeList::new();
        l.push(FreeNode::try_new(ptrs[0]).unwrap());
        drop(l);
    }
}
