/*
 * urcu_peer.c - the liburcu (memb flavour) peer of the grace benchmarks.
 *
 * Compiled by grace-bench's build.rs only when liburcu-dev is installed.
 *
 * _LGPL_SOURCE must be defined before the liburcu headers are included: it
 * makes urcu_memb_read_lock()/urcu_memb_read_unlock() expand to liburcu's
 * static inline read side (a thread-local nesting counter update plus, in the
 * memb flavour, a compiler barrier when sys_membarrier is available), which is
 * what a C program built against liburcu actually runs. The Rust side measures
 * the exported (out-of-line) symbols separately as the "FFI" figure.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PEER_BARRIER() __asm__ __volatile__("" ::: "memory")

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Registers the calling thread as a liburcu-memb reader. */
void grace_urcu_register_thread(void)
{
	urcu_memb_register_thread();
}

/* Unregisters the calling thread; it must not be inside a read section. */
void grace_urcu_unregister_thread(void)
{
	urcu_memb_unregister_thread();
}

/*
 * Runs `iters` outermost read-side critical sections with the inline read
 * side and returns the elapsed time in nanoseconds (CLOCK_MONOTONIC, the
 * clock Rust's Instant uses). The calling thread must be registered.
 */
uint64_t grace_urcu_read_loop_inline(uint64_t iters)
{
	uint64_t start = now_ns();

	for (uint64_t i = 0; i < iters; i++) {
		urcu_memb_read_lock();
		PEER_BARRIER();
		urcu_memb_read_unlock();
	}
	return now_ns() - start;
}

/* Waits for a grace period (the caller must not be in a read section). */
void grace_urcu_synchronize(void)
{
	urcu_memb_synchronize_rcu();
}

/* Waits until every call_rcu() callback queued before it has run. */
void grace_urcu_barrier(void)
{
	urcu_memb_barrier();
}

/* One preallocated callback: the rcu_head plus the counter it bumps. */
struct peer_head {
	struct rcu_head head;
	uint64_t *counter;
};

struct grace_urcu_heads {
	uint64_t n;
	struct peer_head heads[];
};

static void peer_count_cb(struct rcu_head *head)
{
	struct peer_head *p = caa_container_of(head, struct peer_head, head);

	__atomic_fetch_add(p->counter, 1, __ATOMIC_RELAXED);
}

/*
 * Allocates `n` callback heads that all count into `counter` (which must stay
 * valid until every queued callback has run). Returns NULL on allocation
 * failure.
 */
struct grace_urcu_heads *grace_urcu_heads_new(uint64_t n, uint64_t *counter)
{
	struct grace_urcu_heads *h;

	h = malloc(sizeof(*h) + n * sizeof(struct peer_head));
	if (!h)
		return NULL;
	h->n = n;
	for (uint64_t i = 0; i < n; i++) {
		/* Touch the memory now so page faults stay out of the timing. */
		memset(&h->heads[i].head, 0, sizeof(h->heads[i].head));
		h->heads[i].counter = counter;
	}
	return h;
}

/*
 * Queues every head of `h` with call_rcu(). The calling thread must be
 * registered. The heads must not be freed or reused before a barrier.
 */
void grace_urcu_call_queue(struct grace_urcu_heads *h)
{
	for (uint64_t i = 0; i < h->n; i++)
		urcu_memb_call_rcu(&h->heads[i].head, peer_count_cb);
}

/* Frees heads whose callbacks have all run (after grace_urcu_barrier()). */
void grace_urcu_heads_free(struct grace_urcu_heads *h)
{
	free(h);
}

/*
 * Single-thread call_rcu throughput: queues `n` preallocated callbacks, then
 * waits for all of them with rcu_barrier(). Returns the elapsed nanoseconds,
 * barrier included, or UINT64_MAX (with a message on stderr) if allocation
 * failed or the callbacks did not all run. The calling thread must be
 * registered.
 */
uint64_t grace_urcu_call_loop(uint64_t n)
{
	/* On the heap: on failure both it and the heads are leaked, since a
	 * straggling callback could still touch them. */
	uint64_t *counter = calloc(1, sizeof(*counter));
	struct grace_urcu_heads *h = counter ? grace_urcu_heads_new(n, counter) : NULL;
	uint64_t start, elapsed, ran;

	if (!h) {
		free(counter);
		fprintf(stderr, "grace_urcu_call_loop: cannot allocate %llu heads\n",
			(unsigned long long)n);
		return UINT64_MAX;
	}
	start = now_ns();
	grace_urcu_call_queue(h);
	urcu_memb_barrier();
	elapsed = now_ns() - start;
	ran = __atomic_load_n(counter, __ATOMIC_ACQUIRE);
	if (ran != n) {
		fprintf(stderr,
			"grace_urcu_call_loop: %llu of %llu callbacks ran after rcu_barrier\n",
			(unsigned long long)ran, (unsigned long long)n);
		return UINT64_MAX;
	}
	grace_urcu_heads_free(h);
	free(counter);
	return elapsed;
}

/*
 * A 64-byte object freed through call_rcu(): the rcu_head liburcu needs is
 * embedded (it has no headless form), followed by the counter the freeing
 * callback bumps, and filler up to 64 bytes - the same size as the boxes the
 * Rust rows free.
 */
struct peer_obj {
	struct rcu_head head;
	uint64_t *counter;
	unsigned char fill[64 - sizeof(struct rcu_head) - sizeof(uint64_t *)];
};

_Static_assert(sizeof(struct peer_obj) == 64, "peer_obj is 64 bytes");

static void peer_free_cb(struct rcu_head *head)
{
	struct peer_obj *p = caa_container_of(head, struct peer_obj, head);

	__atomic_fetch_add(p->counter, 1, __ATOMIC_RELAXED);
	free(p);
}

/*
 * The liburcu equivalent of `kvfree(Box::new([0u8; 64]))`, `n` times: malloc
 * 64 bytes, then call_rcu() with a callback that counts into `counter` and
 * frees the object. Returns how many objects were queued (fewer than `n` only
 * if malloc failed). The calling thread must be registered; `counter` must
 * stay valid until every queued callback has run (rcu_barrier()).
 */
uint64_t grace_urcu_free_loop(uint64_t n, uint64_t *counter)
{
	for (uint64_t i = 0; i < n; i++) {
		struct peer_obj *p = malloc(sizeof(*p));

		if (!p)
			return i;
		p->counter = counter;
		p->fill[0] = (unsigned char)i;
		urcu_memb_call_rcu(&p->head, peer_free_cb);
	}
	return n;
}

/*
 * A preallocated callback whose work is to free one object allocated by the
 * caller (the `call` suite's free64 rows: a 64-byte Rust Box): the rcu_head,
 * the object, and the caller's function that frees it.
 */
struct peer_box_head {
	struct rcu_head head;
	void *box;
	void (*free_box)(void *box);
};

struct grace_urcu_box_heads {
	uint64_t n;
	struct peer_box_head heads[];
};

static void peer_box_cb(struct rcu_head *head)
{
	struct peer_box_head *p = caa_container_of(head, struct peer_box_head, head);

	p->free_box(p->box);
}

/*
 * Allocates (and touches) `n` heads whose callbacks free their object with
 * `free_box`. Returns NULL on allocation failure.
 */
struct grace_urcu_box_heads *grace_urcu_box_heads_new(uint64_t n, void (*free_box)(void *))
{
	struct grace_urcu_box_heads *h;

	h = malloc(sizeof(*h) + n * sizeof(struct peer_box_head));
	if (!h)
		return NULL;
	h->n = n;
	for (uint64_t i = 0; i < n; i++) {
		memset(&h->heads[i].head, 0, sizeof(h->heads[i].head));
		h->heads[i].box = NULL;
		h->heads[i].free_box = free_box;
	}
	return h;
}

/*
 * Queues head `i` of `h` (i < h->n, each head at most once before a barrier)
 * with call_rcu(); its callback passes `box` to the heads' free function. The
 * calling thread must be registered.
 */
void grace_urcu_box_call(struct grace_urcu_box_heads *h, uint64_t i, void *box)
{
	h->heads[i].box = box;
	urcu_memb_call_rcu(&h->heads[i].head, peer_box_cb);
}

/* Frees heads whose callbacks have all run (after grace_urcu_barrier()). */
void grace_urcu_box_heads_free(struct grace_urcu_box_heads *h)
{
	free(h);
}
