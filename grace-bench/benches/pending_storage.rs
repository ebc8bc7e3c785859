//! Storage layout for `grace::pending`: pages of pointers (the chunk stack the library keeps)
//! against a radix tree used as a vector (the seed's genradix, rebuilt here with the same
//! cursor fast path), at several node sizes. The review of seed 002 argues one against the
//! other; this is the measurement the library's choice rests on.
//!
//! Per batch of `N` object pointers (`N` = 4096, about what a busy CPU queues per grace
//! period), each layout is timed on:
//!
//! * `push_drain`: push every pointer (allocating chunks or nodes at boundaries), then visit
//!   them all and free the storage: the enqueue side plus the worker's bulk pass;
//! * `push_pop`: push every pointer, then take them all back one by one (dequeue);
//! * `merge_drain`: build two half batches, merge them into one (what expiry does when two
//!   cookies complete together), then visit and free.
//!
//! Plus the library's whole enqueue fast path (`Pending::enqueue` of a 64-byte box, with the
//! shard lock, the cookie and the batch lookup) against a plain `Box` allocation and free.
//!
//! Run: `cargo bench -p grace-bench --bench pending_storage`.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::ptr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grace::pending::layout::{slots_for, ChunkStack, FreeChunk};
use grace::pending::{Pending, Process};

const N: usize = 4096;

/// What both layouts offer the benchmark.
trait Storage: Default {
    fn push(&mut self, p: *mut ());
    fn pop(&mut self) -> Option<*mut ()>;
    /// Visit everything, then free the storage.
    fn drain(&mut self, each: impl FnMut(*mut ()));
    /// Merge `other` into `self`.
    fn merge(&mut self, other: Self);
}

/// The library's chunk stack, chunks allocated on demand (as `Pending` does outside its lock).
struct Chunks<const CAP: usize>(ChunkStack<CAP>);

impl<const CAP: usize> Default for Chunks<CAP> {
    fn default() -> Self {
        Chunks(ChunkStack::new())
    }
}

impl<const CAP: usize> Storage for Chunks<CAP> {
    #[inline]
    fn push(&mut self, p: *mut ()) {
        if let Err(p) = self.0.try_push(p) {
            self.0.push_chunk(FreeChunk::try_new().expect("memory"));
            self.0.try_push(p).expect("room in a fresh chunk");
        }
    }
    #[inline]
    fn pop(&mut self) -> Option<*mut ()> {
        self.0.pop(&mut drop)
    }
    fn drain(&mut self, each: impl FnMut(*mut ())) {
        self.0.drain(each, drop);
    }
    fn merge(&mut self, other: Self) {
        self.0.append(other.0);
    }
}

/// A generic radix tree used as a vector, like the kernel's genradix: `F` pointer slots per
/// node, leaves hold object pointers, interior nodes hold children; the depth grows as the
/// vector does. Pushes write at a cursor into the current leaf and walk the tree only at a
/// leaf boundary; a pop walks to its index (and resets the cursor, as the seed does).
struct Radix<const F: usize> {
    root: *mut [*mut (); F],
    /// 0: the root is a leaf.
    depth: u32,
    len: usize,
    cursor: *mut *mut (),
    end: *mut *mut (),
}

impl<const F: usize> Default for Radix<F> {
    fn default() -> Self {
        Radix {
            root: ptr::null_mut(),
            depth: 0,
            len: 0,
            cursor: ptr::null_mut(),
            end: ptr::null_mut(),
        }
    }
}

impl<const F: usize> Radix<F> {
    fn layout() -> Layout {
        Layout::new::<[*mut (); F]>()
    }

    /// A node: interior nodes zeroed (null children), leaves not (genradix zeroes both; the
    /// benefit of the doubt goes to the radix tree).
    fn node(interior: bool) -> *mut [*mut (); F] {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe {
            if interior {
                alloc_zeroed(Self::layout())
            } else {
                alloc(Self::layout())
            }
        };
        assert!(!p.is_null(), "memory");
        p.cast()
    }

    /// Entries the tree can hold at its current depth.
    fn capacity(&self) -> usize {
        F.pow(self.depth + 1)
    }

    /// The slot for index `idx`, creating the leaf (and interior nodes, and depth) if needed.
    fn slot_alloc(&mut self, idx: usize) -> *mut *mut () {
        if self.root.is_null() {
            self.root = Self::node(self.depth > 0);
        }
        while idx >= self.capacity() {
            let top = Self::node(true);
            // SAFETY: `top` is a fresh zeroed interior node; the old root becomes child 0.
            unsafe { (*top)[0] = self.root.cast() };
            self.root = top;
            self.depth += 1;
        }
        let mut node = self.root;
        for level in (1..=self.depth).rev() {
            let i = (idx / F.pow(level)) % F;
            // SAFETY: `node` is a live interior node; `i < F`.
            unsafe {
                let child = &mut (*node)[i];
                if child.is_null() {
                    *child = Self::node(level > 1).cast();
                }
                node = (*child).cast();
            }
        }
        // SAFETY: `node` is the live leaf for `idx`.
        unsafe { (*node).as_mut_ptr().add(idx % F) }
    }

    fn slot(&self, idx: usize) -> *mut *mut () {
        let mut node = self.root;
        for level in (1..=self.depth).rev() {
            // SAFETY: every index below `len` has its path allocated.
            node = unsafe { (*node)[(idx / F.pow(level)) % F].cast() };
        }
        // SAFETY: as above.
        unsafe { (*node).as_mut_ptr().add(idx % F) }
    }

    /// Free the subtree at `node` of height `level`, visiting leaf entries below `len`.
    ///
    /// # Safety
    ///
    /// `node` is a live node of this tree at `level`, covering indices from `base`.
    unsafe fn free(
        node: *mut [*mut (); F],
        level: u32,
        base: usize,
        len: usize,
        each: &mut impl FnMut(*mut ()),
    ) {
        if level == 0 {
            for i in 0..F.min(len.saturating_sub(base)) {
                // SAFETY: leaf slots below `len` were written by push.
                each(unsafe { (*node)[i] });
            }
        } else {
            let span = F.pow(level);
            for i in 0..F {
                // SAFETY: a live interior node; non-null children are live nodes.
                let child = unsafe { (*node)[i] };
                if !child.is_null() {
                    // SAFETY: a child of an interior node at `level` is at `level - 1`.
                    unsafe { Self::free(child.cast(), level - 1, base + i * span, len, each) };
                }
            }
        }
        // SAFETY: allocated by `node()` with this layout, freed once.
        unsafe { dealloc(node.cast(), Self::layout()) };
    }
}

impl<const F: usize> Storage for Radix<F> {
    #[inline]
    fn push(&mut self, p: *mut ()) {
        if self.cursor == self.end {
            self.cursor = self.slot_alloc(self.len);
            // SAFETY: the cursor is a slot of a leaf; its end is the leaf's end.
            self.end = unsafe { self.cursor.add(F - self.len % F) };
        }
        // SAFETY: cursor < end, within the current leaf.
        unsafe {
            self.cursor.write(p);
            self.cursor = self.cursor.add(1);
        }
        self.len += 1;
    }
    #[inline]
    fn pop(&mut self) -> Option<*mut ()> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.cursor = ptr::null_mut();
        self.end = ptr::null_mut();
        // SAFETY: index `len` was written by push.
        Some(unsafe { self.slot(self.len).read() })
    }
    fn drain(&mut self, mut each: impl FnMut(*mut ())) {
        if !self.root.is_null() {
            // SAFETY: the root is live at `depth`, covering indices from 0.
            unsafe { Self::free(self.root, self.depth, 0, self.len, &mut each) };
        }
        *self = Radix::default();
    }
    fn merge(&mut self, mut other: Self) {
        // Radix trees do not merge: copy the other one over, entry by entry.
        let mut moved = Vec::new();
        other.drain(|p| moved.push(p));
        for p in moved {
            self.push(p);
        }
    }
}

/// Distinct fake object pointers (never dereferenced).
fn pointers() -> Vec<*mut ()> {
    (1..=N).map(|i| (i * 16) as *mut ()).collect()
}

fn run_layout<S: Storage>(c: &mut Criterion, name: &str) {
    let ptrs = pointers();
    for (op, label) in [(0, "push_drain"), (1, "push_pop"), (2, "merge_drain")] {
        let mut g = c.benchmark_group(format!("pending_storage/{label}"));
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut s = S::default();
                // Every object must come out once; counting costs both layouts the same.
                let mut seen = 0usize;
                match op {
                    0 => {
                        for &p in &ptrs {
                            s.push(p);
                        }
                        s.drain(|p| {
                            black_box(p);
                            seen += 1;
                        });
                    }
                    1 => {
                        for &p in &ptrs {
                            s.push(p);
                        }
                        while let Some(p) = s.pop() {
                            black_box(p);
                            seen += 1;
                        }
                        s.drain(|_| {});
                    }
                    _ => {
                        let mut other = S::default();
                        for &p in &ptrs[..N / 2] {
                            s.push(p);
                        }
                        for &p in &ptrs[N / 2..] {
                            other.push(p);
                        }
                        s.merge(other);
                        s.drain(|p| {
                            black_box(p);
                            seen += 1;
                        });
                    }
                }
                assert_eq!(seen, N);
            })
        });
        g.finish();
    }
}

fn layouts(c: &mut Criterion) {
    run_layout::<Chunks<{ slots_for(256) }>>(c, "chunks-256B");
    run_layout::<Chunks<{ slots_for(512) }>>(c, "chunks-512B");
    run_layout::<Chunks<{ slots_for(1024) }>>(c, "chunks-1KiB");
    run_layout::<Chunks<{ slots_for(4096) }>>(c, "chunks-4KiB");
    run_layout::<Radix<32>>(c, "radix-256B");
    run_layout::<Radix<64>>(c, "radix-512B");
    run_layout::<Radix<128>>(c, "radix-1KiB");
    run_layout::<Radix<512>>(c, "radix-4KiB");
}

/// The whole enqueue fast path, against the allocation it defers.
fn enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("pending_enqueue_64B");
    g.bench_function("box_alloc_free", |b| {
        b.iter(|| drop(black_box(Box::new([0u8; 64]))))
    });
    let pending = Pending::new(grace::Rcu, Process::free());
    g.bench_function("pending_enqueue", |b| {
        b.iter(|| pending.enqueue(black_box(Box::new([0u8; 64]))))
    });
    g.finish();
    drop(pending);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = layouts, enqueue
}
criterion_main!(benches);
