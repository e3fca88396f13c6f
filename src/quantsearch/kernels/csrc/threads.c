/* A minimal fork-join over pthreads: one call, `count` workers, joined before returning. */
#include <pthread.h>
#include <stdlib.h>

#include "qs_kernels.h"

void qs_parallel(void *(*fn)(void *), void *args, size_t size, int count) {
    if (count <= 1) {
        if (count == 1) fn(args);
        return;
    }
    pthread_t *ids = (pthread_t *)malloc(sizeof(pthread_t) * (size_t)count);
    char *started = (char *)calloc((size_t)count, 1);
    if (!ids || !started) { /* no memory for bookkeeping: run everything here */
        for (int i = 0; i < count; i++) fn((char *)args + (size_t)i * size);
        free(ids);
        free(started);
        return;
    }
    for (int i = 1; i < count; i++)
        started[i] = pthread_create(&ids[i], NULL, fn, (char *)args + (size_t)i * size) == 0;
    fn(args);
    for (int i = 1; i < count; i++) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            fn((char *)args + (size_t)i * size); /* the thread could not start: do its share here */
    }
    free(ids);
    free(started);
}
