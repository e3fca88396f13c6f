/* Fork-join over pthreads that never waits for a thread the OS has not started yet.
 *
 * Share 0 runs on the caller; every other share gets a detached thread. When the caller has done
 * its own share it claims, one by one, the shares whose thread has not started (an atomic
 * PENDING -> TAKEN on the share's ticket) and runs them itself; it waits only for shares already
 * running. On a loaded machine (a server, or a box shared with other jobs) a new thread can wait
 * milliseconds for a core, so joining it would cost more than the work it was given.
 *
 * A ticket is shared by the caller and the thread and freed by whichever lets go of it last, so a
 * thread that starts after the call has returned only touches its own ticket. */
#include <pthread.h>
#include <stdlib.h>

#include "qs_kernels.h"

enum { PENDING = 0, RUNNING = 1, DONE = 2, TAKEN = 3 };

typedef struct {
    void *(*fn)(void *);
    void *arg;
    int state;             /* atomic */
    int refs;              /* atomic: caller + thread */
    pthread_mutex_t *lock; /* the call's; used only while the call waits for this share */
    pthread_cond_t *done;
} ticket;

static void release(ticket *t) {
    if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0) free(t);
}

static void *trampoline(void *p) {
    ticket *t = (ticket *)p;
    int expected = PENDING;
    if (__atomic_compare_exchange_n(&t->state, &expected, RUNNING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        t->fn(t->arg);
        pthread_mutex_lock(t->lock);
        __atomic_store_n(&t->state, DONE, __ATOMIC_RELEASE);
        pthread_cond_broadcast(t->done);
        pthread_mutex_unlock(t->lock); /* the caller may return from here on: no more use of lock */
    }
    release(t);
    return NULL;
}

void qs_parallel(void *(*fn)(void *), void *args, size_t size, int count) {
    if (count <= 1) {
        if (count == 1) fn(args);
        return;
    }
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t done = PTHREAD_COND_INITIALIZER;
    ticket **tickets = (ticket **)calloc((size_t)count, sizeof(ticket *));
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0 && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
    for (int i = 1; i < count && tickets && have_attr; i++) {
        ticket *t = (ticket *)malloc(sizeof(ticket));
        if (!t) break;
        t->fn = fn;
        t->arg = (char *)args + (size_t)i * size;
        t->state = PENDING;
        t->refs = 2;
        t->lock = &lock;
        t->done = &done;
        pthread_t id;
        if (pthread_create(&id, &attr, trampoline, t) != 0) {
            free(t);
            break; /* no more threads: the caller runs the remaining shares */
        }
        tickets[i] = t;
    }
    if (have_attr) pthread_attr_destroy(&attr);
    fn(args);
    for (int i = 1; i < count; i++) {
        ticket *t = tickets ? tickets[i] : NULL;
        int expected = PENDING;
        if (!t) {
            fn((char *)args + (size_t)i * size);
            continue;
        }
        if (__atomic_compare_exchange_n(&t->state, &expected, TAKEN, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            fn(t->arg); /* its thread has not started: do the share here */
        } else {
            pthread_mutex_lock(&lock);
            while (__atomic_load_n(&t->state, __ATOMIC_ACQUIRE) != DONE) pthread_cond_wait(&done, &lock);
            pthread_mutex_unlock(&lock);
        }
        release(t);
    }
    free(tickets);
    pthread_cond_destroy(&done);
    pthread_mutex_destroy(&lock);
}
