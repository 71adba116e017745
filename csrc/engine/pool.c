// pool.c — a persistent thread pool that hands out work in chunks.
//
// A job is n_chunks independent pieces, split into nth contiguous segments, one
// per thread taking part (the caller is thread 0). A thread runs its own segment
// front to back, so its memory reads form one stream the hardware prefetcher can
// follow (interleaving small chunks between threads halves decode speed), then
// takes chunks left in the other segments: a thread the OS has not scheduled
// simply gets none of its own run by itself, the others do its share, and no job
// waits for a thread that is not running.
//
// Every segment has its own counter, on its own cache line, so claiming a chunk
// of one's own segment touches no line another thread is using. A counter holds
// the job's generation in its high 32 bits, so a worker that wakes late can never
// claim chunks of a job it did not read. The job's description (fn, ctx, sizes) is
// read like a sequence lock: the caller marks the job word busy (bit 0) before it
// rewrites the description, and a worker uses what it read only if the job word is
// unchanged afterwards (else a late worker could pair one job's function or chunk
// count with the next one's, or with a context whose caller has returned).
// Finished chunks are counted per thread and added once. Workers spin a while on
// the generation (a decode step issues hundreds of small jobs, and waking a
// sleeping thread costs more than a small job), then sleep on a condition variable.
// A spinning worker yields its CPU now and then: a thread waiting for that CPU (the
// server's event loop writing the step's tokens, another program) runs in the gaps
// between jobs and steps instead of waiting out the spinner's time slice, and if it
// is still running when the next job comes, the caller takes the worker's chunks.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "lp.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define lp_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define lp_cpu_relax() __asm__ __volatile__("yield")
#else
#define lp_cpu_relax() ((void)0)
#endif

#define LP_MAX_THREADS 256
#define LP_SPIN_ROUNDS (1 << 16)   // a worker's spinning before it sleeps
#define LP_WORKER_YIELD 256        // a waiting worker yields its CPU every so many spins
#define LP_WAIT_SPINS 1024         // the caller's spinning between yields while others finish
#define LP_LINE 64

typedef struct {
    _Alignas(LP_LINE) _Atomic uint64_t next;  // generation << 32 | next chunk of the segment
} segment;

static struct {
    pthread_mutex_t call_lock;       // one job at a time
    pthread_mutex_t lock;            // guards sleeping
    pthread_cond_t wake;
    _Alignas(LP_LINE) _Atomic uint64_t job;  // generation << 32 (what workers spin on)
    _Atomic(lp_chunk_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_chunks;
    atomic_int nth;                  // threads taking part: ith < nth
    _Alignas(LP_LINE) atomic_int done;  // chunks finished in the current job
    int n_workers;                   // started so far (ith 1..n_workers)
    segment seg[LP_MAX_THREADS];
} pool = { .call_lock = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER,
           .wake = PTHREAD_COND_INITIALIZER };

// Segment i of nth: chunks [first, first + count) of n_chunks.
static inline int seg_first(int i, int n_chunks, int nth) { return (int)((int64_t)n_chunks * i / nth); }

// Claims and runs the chunks left in segment i of job generation gen; returns how many it ran.
static int run_segment(uint32_t gen, lp_chunk_fn fn, void *ctx, int n_chunks, int nth, int i, int ith) {
    _Atomic uint64_t *next = &pool.seg[i].next;
    const int end = seg_first(i + 1, n_chunks, nth);
    int ran = 0;
    for (;;) {
        uint64_t cur = atomic_load_explicit(next, memory_order_acquire);
        if ((uint32_t)(cur >> 32) != gen || (int)(uint32_t)cur >= end) return ran;
        if (!atomic_compare_exchange_weak_explicit(next, &cur, cur + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        fn(ctx, (int)(uint32_t)cur, ith);
        ran++;
    }
}

// Thread ith's part of job gen: its own segment, then what is left of the others.
static void run_chunks(uint32_t gen, lp_chunk_fn fn, void *ctx, int n_chunks, int nth, int ith) {
    int ran = run_segment(gen, fn, ctx, n_chunks, nth, ith, ith);
    for (int k = 1; k < nth; k++) ran += run_segment(gen, fn, ctx, n_chunks, nth, (ith + k) % nth, ith);
    if (ran) atomic_fetch_add_explicit(&pool.done, ran, memory_order_release);
}

typedef struct { int ith; uint32_t gen; } worker_start;

static void *worker_main(void *arg) {
    // the generation at creation: the job that created this worker may already be posted
    const worker_start start = *(worker_start *)arg;
    free(arg);
    const int ith = start.ith;
    uint32_t seen = start.gen;
    for (;;) {
        uint32_t gen;
        uint64_t word;
        int spins = 0;
        while ((gen = (uint32_t)((word = atomic_load_explicit(&pool.job, memory_order_acquire)) >> 32)) == seen) {
            if (++spins < LP_SPIN_ROUNDS) {
                if ((spins & (LP_WORKER_YIELD - 1)) == 0) sched_yield();
                else lp_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool.lock);
            while ((uint32_t)(atomic_load_explicit(&pool.job, memory_order_acquire) >> 32) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = gen;
        if (word & 1) continue;  // the next job is being written: the others run this one
        // read the job, then check it is still the one announced and not being rewritten
        // (else skip to the newer one)
        const lp_chunk_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&pool.ctx, memory_order_relaxed);
        const int n_chunks = atomic_load_explicit(&pool.n_chunks, memory_order_relaxed);
        const int nth = atomic_load_explicit(&pool.nth, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&pool.job, memory_order_relaxed) != word) continue;
        if (ith < nth) run_chunks(gen, fn, ctx, n_chunks, nth, ith);
    }
    return NULL;
}

static void start_workers(int want) {
    while (pool.n_workers < want) {  // on failure, run with fewer threads
        worker_start *start = malloc(sizeof(*start));
        if (!start) return;
        start->ith = pool.n_workers + 1;
        start->gen = (uint32_t)(atomic_load_explicit(&pool.job, memory_order_relaxed) >> 32);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&t, &attr, worker_main, start) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            free(start);
            return;
        }
        pool.n_workers++;
    }
}

void lp_parallel_chunks(lp_chunk_fn fn, void *ctx, int n_chunks, int nth) {
    if (n_chunks <= 0) return;
    if (nth > n_chunks) nth = n_chunks;
    if (nth > LP_MAX_THREADS) nth = LP_MAX_THREADS;
    if (nth <= 1) {
        for (int i = 0; i < n_chunks; i++) fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&pool.call_lock);
    start_workers(nth - 1);
    if (nth > pool.n_workers + 1) nth = pool.n_workers + 1;
    const uint64_t last = atomic_load_explicit(&pool.job, memory_order_relaxed);
    atomic_store_explicit(&pool.job, last | 1, memory_order_relaxed);  // busy: the description changes
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&pool.n_chunks, n_chunks, memory_order_relaxed);
    atomic_store_explicit(&pool.nth, nth, memory_order_relaxed);
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    const uint32_t gen = (uint32_t)(last >> 32) + 1;
    for (int i = 0; i < nth; i++)
        atomic_store_explicit(&pool.seg[i].next, (uint64_t)gen << 32 | (uint32_t)seg_first(i, n_chunks, nth),
                              memory_order_relaxed);
    pthread_mutex_lock(&pool.lock);
    atomic_store_explicit(&pool.job, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_chunks(gen, fn, ctx, n_chunks, nth, 0);
    // wait for chunks other threads are still running; yield now and then, so a
    // busy machine can schedule them
    for (int spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < n_chunks; spins++) {
        if (spins % LP_WAIT_SPINS == LP_WAIT_SPINS - 1) sched_yield();
        else lp_cpu_relax();
    }
    pthread_mutex_unlock(&pool.call_lock);
}

// ---------------------------------------------------------------------------
// The (ith, nth) form: part ith of nth as one chunk each.

typedef struct { lp_task_fn fn; void *ctx; int nth; } task_adapter;

static void run_task_chunk(void *vctx, int chunk, int ith) {
    const task_adapter *a = vctx;
    (void)ith;
    a->fn(a->ctx, chunk, a->nth);
}

void lp_parallel(lp_task_fn fn, void *ctx, int nth) {
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    task_adapter a = { fn, ctx, nth };
    lp_parallel_chunks(run_task_chunk, &a, nth, nth);
}
