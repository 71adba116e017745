// pool.c — a persistent thread pool. Workers spin briefly on a generation
// counter (a decode step issues hundreds of small matrix products, and waking a
// sleeping thread costs more than the product itself), then sleep on a condition
// variable. The calling thread does part 0 of every job.
#include <pthread.h>
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
#define LP_SPIN_ROUNDS (1 << 16)

static struct {
    pthread_mutex_t call_lock;    // one job at a time
    pthread_mutex_t lock;         // guards sleeping
    pthread_cond_t wake;
    atomic_uint generation;       // bumped once per job
    atomic_int pending;           // workers not yet done with the current job
    lp_task_fn fn;
    void *ctx;
    int nth;
    int n_workers;                // started so far (ith 1..n_workers)
} pool = { .call_lock = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

typedef struct { int ith; unsigned gen; } worker_start;

static void *worker_main(void *arg) {
    // the generation at creation, not at first run: the job that created this
    // worker may already have been posted when it gets here
    const worker_start start = *(worker_start *)arg;
    free(arg);
    const int ith = start.ith;
    unsigned seen = start.gen;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen) {
            if (++spins < LP_SPIN_ROUNDS) {
                lp_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool.lock);
            while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = gen;
        if (ith < pool.nth) pool.fn(pool.ctx, ith, pool.nth);
        // every worker checks in, taking part or not, so none can lag a job behind
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

void lp_parallel(lp_task_fn fn, void *ctx, int nth) {
    if (nth > LP_MAX_THREADS) nth = LP_MAX_THREADS;
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool.call_lock);
    while (pool.n_workers < nth - 1) {  // start missing workers; on failure use fewer threads
        worker_start *start = malloc(sizeof(*start));
        if (!start) break;
        start->ith = pool.n_workers + 1;
        start->gen = atomic_load_explicit(&pool.generation, memory_order_relaxed);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&t, &attr, worker_main, start) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            free(start);
            break;
        }
        pool.n_workers++;
    }
    if (nth > pool.n_workers + 1) nth = pool.n_workers + 1;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.nth = nth;
    atomic_store_explicit(&pool.pending, pool.n_workers, memory_order_relaxed);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    fn(ctx, 0, nth);
    while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0) lp_cpu_relax();
    pthread_mutex_unlock(&pool.call_lock);
}
