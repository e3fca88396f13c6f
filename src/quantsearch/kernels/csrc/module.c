/* Python bindings of the native kernels (quantsearch.kernels._native).
 *
 * Arrays arrive through the buffer protocol (no numpy C API, so building needs only a C compiler
 * and the Python headers). quantsearch.kernels validates every argument with its own exceptions
 * first; the checks here are the last line of defence that keeps a bad call from reading out of
 * bounds. The GIL is released around every scan and every rescoring. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "qs_kernels.h"

static int format_is(const char *format, const char *accepted) {
    if (!format) return 0;
    if (*format == '@' || *format == '=' || *format == '<') format++;
    return format[0] != '\0' && format[1] == '\0' && strchr(accepted, format[0]) != NULL;
}

/* A C-contiguous buffer of `ndim` dimensions whose items have the given size and format. */
static int get_array(PyObject *obj, Py_buffer *view, int writable, int ndim, Py_ssize_t itemsize,
                     const char *formats, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array", name, writable ? " writable" : "");
        return -1;
    }
    if (view->ndim != ndim || view->itemsize != itemsize || !format_is(view->format, formats)) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D with items of format '%s' and %zd bytes, got %d-D '%s' (%zd)",
                     name, ndim, formats, itemsize, view->ndim, view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_isa(int isa) {
    if (isa < QS_ISA_PORTABLE || isa > QS_ISA_AVX512 || !qs_isa_supported(isa)) {
        PyErr_Format(PyExc_ValueError, "instruction set %d is not supported by this CPU", isa);
        return -1;
    }
    return 0;
}

static PyObject *py_isa_supported(PyObject *self, PyObject *args) {
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &isa)) return NULL;
    return PyBool_FromLong(isa >= QS_ISA_PORTABLE && isa <= QS_ISA_AVX512 && qs_isa_supported(isa));
}

static PyObject *py_hamming_topk(PyObject *self, PyObject *args) {
    PyObject *oq, *oc, *ov, *od, *orr;
    Py_ssize_t k, block_bytes;
    int isa, strategy, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOniiinOO", &oq, &oc, &ov, &k, &isa, &strategy, &nthreads, &block_bytes, &od,
                          &orr))
        return NULL;
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (strategy < QS_STRATEGY_AUTO || strategy > QS_STRATEGY_BLOCKED)
        return PyErr_Format(PyExc_ValueError, "unknown strategy %d", strategy);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    Py_buffer q, c, v, d, r;
    int have_valid = ov != Py_None;
    if (get_array(oq, &q, 0, 2, 1, "B", "queries") < 0) return NULL;
    if (get_array(oc, &c, 0, 2, 1, "B", "codes") < 0) goto fail_q;
    if (have_valid && get_array(ov, &v, 0, 1, 1, "?B", "valid") < 0) goto fail_c;
    if (get_array(od, &d, 1, 2, 4, "i", "out_dist") < 0) goto fail_v;
    if (get_array(orr, &r, 1, 2, 8, "lq", "out_rows") < 0) goto fail_d;
    const Py_ssize_t nq = q.shape[0], nb = q.shape[1], n = c.shape[0];
    if (c.shape[1] != nb || nb < 1) {
        PyErr_Format(PyExc_ValueError, "codes have %zd bytes per row, queries %zd", c.shape[1], nb);
        goto fail_r;
    }
    if (have_valid && v.shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "valid has %zd entries for %zd codes", v.shape[0], n);
        goto fail_r;
    }
    if (d.shape[0] != nq || d.shape[1] != k || r.shape[0] != nq || r.shape[1] != k) {
        PyErr_Format(PyExc_ValueError, "outputs must have shape (%zd, %zd)", nq, k);
        goto fail_r;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_hamming_topk((const uint8_t *)q.buf, (const uint8_t *)c.buf,
                             have_valid ? (const uint8_t *)v.buf : NULL, nq, n, nb, k, isa, strategy, nthreads,
                             block_bytes, (int32_t *)d.buf, (int64_t *)r.buf);
        Py_END_ALLOW_THREADS;
    }
    PyBuffer_Release(&r);
    PyBuffer_Release(&d);
    if (have_valid) PyBuffer_Release(&v);
    PyBuffer_Release(&c);
    PyBuffer_Release(&q);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail_r:
    PyBuffer_Release(&r);
fail_d:
    PyBuffer_Release(&d);
fail_v:
    if (have_valid) PyBuffer_Release(&v);
fail_c:
    PyBuffer_Release(&c);
fail_q:
    PyBuffer_Release(&q);
    return NULL;
}

static const char *kind_format(int kind, Py_ssize_t *itemsize) {
    switch (kind) {
    case QS_KIND_INT8: *itemsize = 1; return "b";
    case QS_KIND_UINT8:
    case QS_KIND_INT4: *itemsize = 1; return "B";
    case QS_KIND_FLOAT16: *itemsize = 2; return "e";
    case QS_KIND_FLOAT32: *itemsize = 4; return "f";
    case QS_KIND_Q8_0:
    case QS_KIND_Q4_0:
    case QS_KIND_Q4_1: *itemsize = 1; return "B";
    default: return NULL;
    }
}

static PyObject *py_rescore(PyObject *self, PyObject *args) {
    PyObject *oarrays, *ostarts, *orows, *ow, *oout;
    int kind, offset, isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOiiiiO", &oarrays, &ostarts, &orows, &ow, &kind, &offset, &isa, &nthreads,
                          &oout))
        return NULL;
    Py_ssize_t itemsize = 0;
    const char *format = kind_format(kind, &itemsize);
    if (!format) return PyErr_Format(PyExc_ValueError, "unknown code kind %d", kind);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    PyObject *seq = PySequence_Fast(oarrays, "arrays must be a sequence of arrays");
    if (!seq) return NULL;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = (Py_buffer *)calloc((size_t)(count > 0 ? count : 1), sizeof(Py_buffer));
    const uint8_t **base = (const uint8_t **)calloc((size_t)(count > 0 ? count : 1), sizeof(uint8_t *));
    int64_t *nrows = (int64_t *)calloc((size_t)(count > 0 ? count : 1), sizeof(int64_t));
    Py_ssize_t got = 0;
    Py_buffer st, rw, wt, out;
    int have_st = 0, have_rw = 0, have_wt = 0, have_out = 0, ok = 0;
    if (!views || !base || !nrows) {
        PyErr_NoMemory();
        goto done;
    }
    if (get_array(ow, &wt, 0, 2, 4, "f", "weights") < 0) goto done;
    have_wt = 1;
    const Py_ssize_t nq = wt.shape[0], dim = wt.shape[1];
    const int64_t row_bytes = qs_row_bytes(kind, dim);
    for (; got < count; got++) {
        if (get_array(PySequence_Fast_GET_ITEM(seq, got), &views[got], 0, 2, itemsize, format, "segment array") < 0)
            goto done;
        if (views[got].shape[1] * itemsize != row_bytes) {
            PyErr_Format(PyExc_ValueError, "segment %zd has rows of %zd bytes, expected %lld", got,
                         views[got].shape[1] * itemsize, (long long)row_bytes);
            got++;
            goto done;
        }
        base[got] = (const uint8_t *)views[got].buf;
        nrows[got] = views[got].shape[0];
    }
    if (get_array(ostarts, &st, 0, 1, 8, "lq", "starts") < 0) goto done;
    have_st = 1;
    if (get_array(orows, &rw, 0, 2, 8, "lq", "rows") < 0) goto done;
    have_rw = 1;
    if (get_array(oout, &out, 1, 2, 4, "f", "out") < 0) goto done;
    have_out = 1;
    const int64_t *starts = (const int64_t *)st.buf;
    if (st.shape[0] != count) {
        PyErr_Format(PyExc_ValueError, "starts has %zd entries for %zd segments", st.shape[0], count);
        goto done;
    }
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (starts[i] != total) {
            PyErr_Format(PyExc_ValueError, "segment %zd starts at row %lld, expected %lld", i, (long long)starts[i],
                         (long long)total);
            goto done;
        }
        total += nrows[i];
    }
    const Py_ssize_t c = rw.shape[1];
    if (rw.shape[0] != nq || out.shape[0] != nq || out.shape[1] != c) {
        PyErr_Format(PyExc_ValueError, "rows and out must have shape (%zd, c), weights has %zd rows", nq, nq);
        goto done;
    }
    const int64_t *rows = (const int64_t *)rw.buf;
    for (Py_ssize_t i = 0; i < nq * c; i++) {
        if (rows[i] >= total || rows[i] < -1) {
            PyErr_Format(PyExc_ValueError, "row %lld is outside the %lld stored rows", (long long)rows[i],
                         (long long)total);
            goto done;
        }
    }
    qs_segments segs = {base, starts, nrows, count, row_bytes};
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = qs_rescore(&segs, rows, nq, c, (const float *)wt.buf, dim, kind, offset, isa, nthreads, (float *)out.buf);
    Py_END_ALLOW_THREADS;
    if (rc < 0)
        PyErr_NoMemory();
    else
        ok = 1;
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    if (have_st) PyBuffer_Release(&st);
    if (have_rw) PyBuffer_Release(&rw);
    if (have_wt) PyBuffer_Release(&wt);
    if (have_out) PyBuffer_Release(&out);
    free(views);
    free(base);
    free(nrows);
    Py_DECREF(seq);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* Buffers of one call, released together. */
typedef struct {
    Py_buffer views[16];
    int count;
} buffers;

static Py_buffer *take(buffers *b, PyObject *obj, int writable, int ndim, Py_ssize_t itemsize, const char *formats,
                       const char *name) {
    if (get_array(obj, &b->views[b->count], writable, ndim, itemsize, formats, name) < 0) return NULL;
    return &b->views[b->count++];
}

static void release_all(buffers *b) {
    while (b->count > 0) PyBuffer_Release(&b->views[--b->count]);
}

static PyObject *py_planes_topk(PyObject *self, PyObject *args) {
    PyObject *oc, *ov, *ow, *ou, *olo, *odl, *ocf, *osc, *obi, *oqo, *os, *orr;
    Py_ssize_t k, planes, dim, block_bytes;
    int qbits, isa, strategy, nthreads, and_term;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnnnOiOOOOOOOiiinpOO", &oc, &ov, &k, &planes, &dim, &ow, &qbits, &ou, &olo, &odl,
                          &ocf, &osc, &obi, &oqo, &isa, &strategy, &nthreads, &block_bytes, &and_term, &os, &orr))
        return NULL;
    if (and_term && (planes < 2 || qbits < 1))
        return PyErr_Format(PyExc_ValueError, "the AND term needs >= 2 planes and query bits > 0");
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (planes < 1 || planes > QS_PLANES_MAX)
        return PyErr_Format(PyExc_ValueError, "planes must be in [1, %d], got %zd", QS_PLANES_MAX, planes);
    if (dim < 1) return PyErr_Format(PyExc_ValueError, "dim must be >= 1, got %zd", dim);
    if (qbits < 0 || qbits > QS_QUERY_BITS_MAX)
        return PyErr_Format(PyExc_ValueError, "query bits must be in [0, %d], got %d", QS_QUERY_BITS_MAX, qbits);
    if (strategy < QS_STRATEGY_AUTO || strategy > QS_STRATEGY_BLOCKED)
        return PyErr_Format(PyExc_ValueError, "unknown strategy %d", strategy);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers b = {.count = 0};
    Py_buffer *c, *v = NULL, *w, *u = NULL, *lo, *dl, *cf, *sc = NULL, *bi = NULL, *qo, *sv, *rv;
    const Py_ssize_t nb = (dim + 7) / 8;
    /* AND-term layout: the weights and query planes cover planes + 1 word-padded planes, one coef */
    const Py_ssize_t wdim = and_term ? (planes + 1) * 64 * ((nb + 7) / 8) : dim;
    const Py_ssize_t unb = and_term ? wdim / 8 : nb, ncoef = and_term ? 1 : planes;
    if (!(c = take(&b, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (ov != Py_None && !(v = take(&b, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(w = take(&b, ow, 0, 2, 4, "f", "weights"))) goto fail;
    if (ou != Py_None && !(u = take(&b, ou, 0, 3, 1, "B", "query planes"))) goto fail;
    if (!(lo = take(&b, olo, 0, 1, 8, "d", "lo"))) goto fail;
    if (!(dl = take(&b, odl, 0, 1, 8, "d", "delta"))) goto fail;
    if (!(cf = take(&b, ocf, 0, 1, 8, "d", "plane_coef"))) goto fail;
    if (osc != Py_None && !(sc = take(&b, osc, 0, 1, 4, "f", "row_scale"))) goto fail;
    if (obi != Py_None && !(bi = take(&b, obi, 0, 1, 4, "f", "row_bias"))) goto fail;
    if (!(qo = take(&b, oqo, 0, 1, 8, "d", "query_offset"))) goto fail;
    if (!(sv = take(&b, os, 1, 2, 4, "f", "out_scores"))) goto fail;
    if (!(rv = take(&b, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t n = c->shape[0], nq = w->shape[0];
    if (c->shape[1] < planes * nb) {
        PyErr_Format(PyExc_ValueError, "codes have %zd bytes per row, %zd planes of dim %zd need %zd", c->shape[1],
                     planes, dim, planes * nb);
        goto fail;
    }
    if (w->shape[1] != wdim || (v && v->shape[0] != n) || (sc && sc->shape[0] != n) || (bi && bi->shape[0] != n) ||
        lo->shape[0] != nq || dl->shape[0] != nq || qo->shape[0] != nq || cf->shape[0] != ncoef) {
        PyErr_SetString(PyExc_ValueError, "weights, valid, lo, delta, plane_coef, row_scale, row_bias or "
                                          "query_offset do not match the codes and queries");
        goto fail;
    }
    if ((qbits > 0) != (u != NULL) ||
        (u && (u->shape[0] != nq || u->shape[1] != qbits || u->shape[2] != unb))) {
        PyErr_Format(PyExc_ValueError, "query planes must have shape (%zd, %d, %zd) when query bits > 0, else None",
                     nq, qbits, unb);
        goto fail;
    }
    if (sv->shape[0] != nq || sv->shape[1] != k || rv->shape[0] != nq || rv->shape[1] != k) {
        PyErr_Format(PyExc_ValueError, "outputs must have shape (%zd, %zd)", nq, k);
        goto fail;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_planes_topk((const uint8_t *)c->buf, v ? (const uint8_t *)v->buf : NULL, n, c->shape[1], planes, dim,
                            (const float *)w->buf, nq, qbits, u ? (const uint8_t *)u->buf : NULL,
                            (const double *)lo->buf, (const double *)dl->buf, (const double *)cf->buf,
                            sc ? (const float *)sc->buf : NULL, bi ? (const float *)bi->buf : NULL,
                            (const double *)qo->buf, k, isa, strategy, nthreads, block_bytes, and_term, (float *)sv->buf,
                            (int64_t *)rv->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&b);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&b);
    return NULL;
}

static PyObject *py_nibble_topk(PyObject *self, PyObject *args) {
    PyObject *oc, *ov, *ol, *olo, *odl, *osc, *obi, *oqo, *os, *orr;
    Py_ssize_t k, block_bytes, scale_at;
    int layout, isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOniOOOOnOOiinOO", &oc, &ov, &k, &layout, &ol, &olo, &odl, &osc, &scale_at, &obi,
                          &oqo, &isa, &nthreads, &block_bytes, &os, &orr))
        return NULL;
    if (layout != QS_NIB_PLANES && layout != QS_NIB_BASE3 && layout != QS_NIB_BITS)
        return PyErr_Format(PyExc_ValueError, "unknown layout %d", layout);
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers b = {.count = 0};
    Py_buffer *c, *v = NULL, *l, *lo, *dl, *sc = NULL, *bi = NULL, *qo, *sv, *rv;
    if (!(c = take(&b, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (ov != Py_None && !(v = take(&b, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(l = take(&b, ol, 0, 3, 1, "B", "luts"))) goto fail;
    if (!(lo = take(&b, olo, 0, 1, 8, "d", "lo"))) goto fail;
    if (!(dl = take(&b, odl, 0, 1, 8, "d", "delta"))) goto fail;
    if (osc != Py_None && !(sc = take(&b, osc, 0, 1, 4, "f", "row_scale"))) goto fail;
    if (obi != Py_None && !(bi = take(&b, obi, 0, 1, 4, "f", "row_bias"))) goto fail;
    if (!(qo = take(&b, oqo, 0, 1, 8, "d", "query_offset"))) goto fail;
    if (!(sv = take(&b, os, 1, 2, 4, "f", "out_scores"))) goto fail;
    if (!(rv = take(&b, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t gpb = qs_nib_gpb(layout), planes = qs_nib_planes(layout);
    const Py_ssize_t n = c->shape[0], nq = l->shape[0], groups = l->shape[1], nb = groups / gpb;
    if (l->shape[2] != 16 || groups < gpb || groups % gpb || c->shape[1] < planes * nb || (v && v->shape[0] != n) ||
        (sc && sc->shape[0] != n) || (bi && bi->shape[0] != n) || lo->shape[0] != nq || dl->shape[0] != nq ||
        (scale_at >= 0 && (sc || scale_at + 4 > c->shape[1])) ||
        qo->shape[0] != nq || sv->shape[0] != nq || sv->shape[1] != k || rv->shape[0] != nq || rv->shape[1] != k) {
        PyErr_SetString(PyExc_ValueError, "luts (nq, groups per byte x nb, 16) with the nb bytes in the code width, valid, lo, delta, "
                                          "row_scale (or scale_at), row_bias, query_offset or the outputs do not match");
        goto fail;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_nibble_topk((const uint8_t *)c->buf, v ? (const uint8_t *)v->buf : NULL, n, c->shape[1], nb,
                            layout, (const uint8_t *)l->buf, nq, (const double *)lo->buf, (const double *)dl->buf,
                            sc ? (const float *)sc->buf : NULL, scale_at < 0 ? -1 : scale_at,
                            bi ? (const float *)bi->buf : NULL, (const double *)qo->buf, k, isa, nthreads,
                            block_bytes, (float *)sv->buf,
                            (int64_t *)rv->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&b);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&b);
    return NULL;
}

static PyObject *py_nibble_scan(PyObject *self, PyObject *args) {
    PyObject *oc, *ov, *oq, *olv, *osc, *obi, *oqo, *osb, *os, *orr;
    Py_ssize_t k, block_bytes, scale_at;
    int layout, isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOniOOOnOOOiinOO", &oc, &ov, &k, &layout, &oq, &olv, &osc, &scale_at, &obi, &oqo,
                          &osb, &isa, &nthreads, &block_bytes, &os, &orr))
        return NULL;
    if (layout != QS_NIB_PLANES && layout != QS_NIB_BASE3 && layout != QS_NIB_BITS)
        return PyErr_Format(PyExc_ValueError, "unknown layout %d", layout);
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers b = {.count = 0};
    Py_buffer *c, *v = NULL, *q, *lv, *sc = NULL, *bi = NULL, *qo = NULL, *sb = NULL, *sv, *rv;
    if (!(c = take(&b, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (ov != Py_None && !(v = take(&b, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(q = take(&b, oq, 0, 2, 4, "f", "queries"))) goto fail;
    if (!(lv = take(&b, olv, 0, 2, 8, "d", "levels"))) goto fail;
    if (osc != Py_None && !(sc = take(&b, osc, 0, 1, 4, "f", "row_scale"))) goto fail;
    if (obi != Py_None && !(bi = take(&b, obi, 0, 1, 4, "f", "row_bias"))) goto fail;
    if (oqo != Py_None && !(qo = take(&b, oqo, 0, 1, 8, "d", "query_offset"))) goto fail;
    if (osb != Py_None && !(sb = take(&b, osb, 0, 1, 4, "f", "score_bias"))) goto fail;
    if (!(sv = take(&b, os, 1, 2, 4, "f", "out_scores"))) goto fail;
    if (!(rv = take(&b, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t planes = qs_nib_planes(layout), nlev = qs_nib_levels(layout);
    const Py_ssize_t n = c->shape[0], nq = q->shape[0], dim = q->shape[1];
    const Py_ssize_t nb = layout == QS_NIB_BASE3 ? (dim + 4) / 5 : (dim + 7) / 8;
    if (dim < 1 || lv->shape[0] != dim || lv->shape[1] != nlev || c->shape[1] < planes * nb ||
        (v && v->shape[0] != n) || (sc && sc->shape[0] != n) || (bi && bi->shape[0] != n) ||
        (scale_at >= 0 && (sc || scale_at + 4 > c->shape[1])) || (qo && qo->shape[0] != nq) ||
        (sb && sb->shape[0] != nq) || sv->shape[0] != nq || sv->shape[1] != k || rv->shape[0] != nq ||
        rv->shape[1] != k) {
        PyErr_SetString(PyExc_ValueError, "queries (nq, dim), levels (dim, levels of the layout), the layout's bytes in "
                                          "the code width, valid, row_scale (or scale_at), row_bias, query_offset, "
                                          "score_bias or the outputs do not match");
        goto fail;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_nibble_scan((const uint8_t *)c->buf, v ? (const uint8_t *)v->buf : NULL, n, c->shape[1], nb, layout,
                            (const float *)q->buf, nq, dim, (const double *)lv->buf,
                            sc ? (const float *)sc->buf : NULL, scale_at < 0 ? -1 : scale_at,
                            bi ? (const float *)bi->buf : NULL, qo ? (const double *)qo->buf : NULL,
                            sb ? (const float *)sb->buf : NULL, k, isa, nthreads, block_bytes, (float *)sv->buf,
                            (int64_t *)rv->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&b);
    if (rc == -2) return PyErr_Format(PyExc_ValueError, "queries and levels must be finite");
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&b);
    return NULL;
}

static PyObject *py_blocks_topk(PyObject *self, PyObject *args) {
    PyObject *oc, *ov, *ow, *os, *orr;
    Py_ssize_t k;
    int kind, isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnOiiiOO", &oc, &ov, &k, &ow, &kind, &isa, &nthreads, &os, &orr)) return NULL;
    if (kind < QS_KIND_Q8_0 || kind > QS_KIND_Q4_1) return PyErr_Format(PyExc_ValueError, "unknown block kind %d", kind);
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers b = {.count = 0};
    Py_buffer *c, *v = NULL, *w, *sv, *rv;
    if (!(c = take(&b, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (ov != Py_None && !(v = take(&b, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(w = take(&b, ow, 0, 2, 4, "f", "weights"))) goto fail;
    if (!(sv = take(&b, os, 1, 2, 4, "f", "out_scores"))) goto fail;
    if (!(rv = take(&b, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t n = c->shape[0], nq = w->shape[0], dim = w->shape[1];
    if (dim < 32 || dim % 32 || c->shape[1] != qs_row_bytes(kind, dim) || (v && v->shape[0] != n) ||
        sv->shape[0] != nq || sv->shape[1] != k || rv->shape[0] != nq || rv->shape[1] != k) {
        PyErr_SetString(PyExc_ValueError, "weights (nq, 32 x blocks), codes of those blocks, valid or the outputs "
                                          "do not match");
        goto fail;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_blocks_topk((const uint8_t *)c->buf, v ? (const uint8_t *)v->buf : NULL, n, c->shape[1],
                            (const float *)w->buf, nq, dim, kind, k, isa, nthreads, (float *)sv->buf,
                            (int64_t *)rv->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&b);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&b);
    return NULL;
}

static PyObject *py_table_topk(PyObject *self, PyObject *args) {
    PyObject *oc, *ov, *ot, *osc, *obi, *oqo, *os, *orr;
    Py_ssize_t k, block_bytes;
    int nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnOOOOinOO", &oc, &ov, &k, &ot, &osc, &obi, &oqo, &nthreads, &block_bytes, &os,
                          &orr))
        return NULL;
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    buffers b = {.count = 0};
    Py_buffer *c, *v = NULL, *t, *sc = NULL, *bi = NULL, *qo, *sv, *rv;
    if (!(c = take(&b, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (ov != Py_None && !(v = take(&b, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(t = take(&b, ot, 0, 3, 4, "f", "tables"))) goto fail;
    if (osc != Py_None && !(sc = take(&b, osc, 0, 1, 4, "f", "row_scale"))) goto fail;
    if (obi != Py_None && !(bi = take(&b, obi, 0, 1, 4, "f", "row_bias"))) goto fail;
    if (!(qo = take(&b, oqo, 0, 1, 8, "d", "query_offset"))) goto fail;
    if (!(sv = take(&b, os, 1, 2, 4, "f", "out_scores"))) goto fail;
    if (!(rv = take(&b, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t n = c->shape[0], nq = t->shape[0], nb = t->shape[1];
    if (t->shape[2] != 256 || nb < 1 || c->shape[1] < nb || (v && v->shape[0] != n) || (sc && sc->shape[0] != n) ||
        (bi && bi->shape[0] != n) || qo->shape[0] != nq || sv->shape[0] != nq || sv->shape[1] != k ||
        rv->shape[0] != nq || rv->shape[1] != k) {
        PyErr_SetString(PyExc_ValueError, "tables (nq, nb <= code width, 256), valid, row_scale, row_bias, "
                                          "query_offset or the outputs do not match the codes and queries");
        goto fail;
    }
    int rc = 0;
    if (nq > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_table_topk((const uint8_t *)c->buf, v ? (const uint8_t *)v->buf : NULL, n, c->shape[1], nb,
                           (const float *)t->buf, nq, sc ? (const float *)sc->buf : NULL,
                           bi ? (const float *)bi->buf : NULL, (const double *)qo->buf, k, nthreads, block_bytes,
                           (float *)sv->buf, (int64_t *)rv->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&b);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&b);
    return NULL;
}

/* madvise(WILLNEED) over sorted page addresses, `span` bytes from each, runs of touching pages
 * merged into one call: the kernel starts reading every page at once instead of one fault at a
 * time. Returns the number of calls; errors are ignored (the reads then fault as usual). */
static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* willneed_rows(bases, nrows, starts, row_bytes, rows, bitmaps, sample=0) -> (madvise calls, pages hinted)
 *
 * The pages of the given global rows of row-major segments (segment i: nrows[i] rows of row_bytes
 * at address bases[i], global rows from starts[i]; base 0 = not mapped, skipped; rows < 0 skipped)
 * get madvise(MADV_WILLNEED), in ascending address order, adjacent pages merged into one call.
 * bitmaps: None, or per segment None or a writable uint8 array with one bit per page of the
 * segment (from its base rounded down to a page): a page whose bit is set is skipped, and every
 * hinted page gets its bit set (the caller clears them when the pages may have been evicted).
 * sample > 0: first check that many of the pages to hint with mincore; all of them cached: hint
 * none (a warm tier costs a few mincore calls, not one madvise per page).
 * The bitmaps are read and written with the GIL held (concurrent searches), the calls made
 * without it. */
static PyObject *py_willneed_rows(PyObject *self, PyObject *args) {
    PyObject *obases, *onrows, *ostarts, *orows, *obitmaps;
    Py_ssize_t row_bytes, sample = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnOO|n", &obases, &onrows, &ostarts, &row_bytes, &orows, &obitmaps, &sample))
        return NULL;
    if (row_bytes < 1) return PyErr_Format(PyExc_ValueError, "row_bytes must be >= 1, got %zd", row_bytes);
    Py_buffer b, nr, st, r;
    PyObject *result = NULL;
    Py_buffer *maps = NULL;
    uint64_t *pages = NULL;
    Py_ssize_t nmaps = 0;
    if (get_array(obases, &b, 0, 1, 8, "QL", "bases") < 0) return NULL;
    if (get_array(onrows, &nr, 0, 1, 8, "lq", "nrows") < 0) goto fail_b;
    if (get_array(ostarts, &st, 0, 1, 8, "lq", "starts") < 0) goto fail_nr;
    if (PyObject_GetBuffer(orows, &r, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail_st;
    const Py_ssize_t nseg = b.shape[0];
    if (r.itemsize != 8 || !format_is(r.format, "lq")) {
        PyErr_SetString(PyExc_ValueError, "rows must be a C-contiguous int64 array");
        goto done;
    }
    if (nr.shape[0] != nseg || st.shape[0] != nseg) {
        PyErr_SetString(PyExc_ValueError, "bases, nrows and starts must have the same length");
        goto done;
    }
    const int have_maps = obitmaps != Py_None;
    if (have_maps && (!PyList_Check(obitmaps) || PyList_GET_SIZE(obitmaps) != nseg)) {
        PyErr_SetString(PyExc_ValueError, "bitmaps must be None or a list with one entry per segment");
        goto done;
    }
    maps = (Py_buffer *)calloc((size_t)(nseg > 0 ? nseg : 1), sizeof(Py_buffer));
    if (!maps) {
        PyErr_NoMemory();
        goto done;
    }
#if defined(__unix__) || defined(__APPLE__)
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
#else
    const uint64_t page = 4096;
#endif
    const uint64_t *base = (const uint64_t *)b.buf;
    const int64_t *segn = (const int64_t *)nr.buf, *segs = (const int64_t *)st.buf, *rows = (const int64_t *)r.buf;
    for (; nmaps < nseg && have_maps; nmaps++) {
        PyObject *m = PyList_GET_ITEM(obitmaps, nmaps);
        maps[nmaps].obj = NULL;
        if (m == Py_None) continue;
        if (get_array(m, &maps[nmaps], 1, 1, 1, "B", "bitmap") < 0) goto done;
        const uint64_t lo = base[nmaps] & ~(page - 1);
        const uint64_t need = (base[nmaps] + (uint64_t)segn[nmaps] * (uint64_t)row_bytes - lo + page - 1) / page;
        if ((uint64_t)maps[nmaps].shape[0] * 8 < need) {
            PyErr_Format(PyExc_ValueError, "bitmap %zd has %zd bits for %llu pages", nmaps, maps[nmaps].shape[0] * 8,
                         (unsigned long long)need);
            PyBuffer_Release(&maps[nmaps]); /* entries [0, nmaps) are released at done */
            goto done;
        }
    }
    const Py_ssize_t count = r.len / 8;
    const uint64_t per_row = (uint64_t)row_bytes / page + 2; /* pages one row can touch */
    pages = (uint64_t *)malloc((size_t)(count > 0 ? count : 1) * per_row * 8);
    if (!pages) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t npages = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const int64_t row = rows[i];
        if (row < 0) continue;
        Py_ssize_t lo_s = 0, hi_s = nseg; /* last segment with start <= row */
        while (hi_s - lo_s > 1) {
            const Py_ssize_t mid = (lo_s + hi_s) / 2;
            if (segs[mid] <= row) lo_s = mid; else hi_s = mid;
        }
        if (nseg == 0 || segs[lo_s] > row || row - segs[lo_s] >= segn[lo_s] || base[lo_s] == 0) continue;
        const uint64_t first = base[lo_s] & ~(page - 1);
        const uint64_t addr = base[lo_s] + (uint64_t)(row - segs[lo_s]) * (uint64_t)row_bytes;
        uint8_t *bits = have_maps && maps[lo_s].obj ? (uint8_t *)maps[lo_s].buf : NULL;
        for (uint64_t p = addr & ~(page - 1); p < addr + (uint64_t)row_bytes; p += page) {
            if (bits) {
                const uint64_t j = (p - first) / page;
                if (bits[j >> 3] & (1u << (j & 7))) continue;
                bits[j >> 3] |= (uint8_t)(1u << (j & 7));
            }
            pages[npages++] = p;
        }
    }
    Py_ssize_t calls = 0, hinted = 0;
    Py_BEGIN_ALLOW_THREADS;
    qsort(pages, (size_t)npages, 8, cmp_u64);
    Py_ssize_t i = 0;
#if defined(__unix__) || defined(__APPLE__)
    /* sample: when `sample` pages spread over the list are all in the page cache already (mincore),
     * take the tier to be warm and hint nothing (their bits stay set). */
    if (sample > 0 && npages > 0) {
        int resident = 1;
        for (Py_ssize_t j = 0; j < sample && resident; j++) {
            unsigned char v = 0;
            const uint64_t p = pages[(Py_ssize_t)((double)j * (double)npages / (double)sample)];
            if (mincore((void *)(uintptr_t)p, (size_t)page, (void *)&v) != 0 || !(v & 1)) resident = 0;
        }
        if (resident) i = npages;
    }
#endif
    while (i < npages) {
        const uint64_t lo = pages[i];
        uint64_t hi = lo + page;
        while (++i < npages && pages[i] <= hi) {
            if (pages[i] == hi) hi += page;
        }
#if defined(__unix__) || defined(__APPLE__)
        (void)madvise((void *)(uintptr_t)lo, (size_t)(hi - lo), MADV_WILLNEED);
#endif
        hinted += (Py_ssize_t)((hi - lo) / page);
        calls++;
    }
    Py_END_ALLOW_THREADS;
    result = Py_BuildValue("nn", calls, hinted);
done:
    for (Py_ssize_t j = 0; j < nmaps; j++)
        if (maps[j].obj) PyBuffer_Release(&maps[j]);
    free(maps);
    free(pages);
    PyBuffer_Release(&r);
fail_st:
    PyBuffer_Release(&st);
fail_nr:
    PyBuffer_Release(&nr);
fail_b:
    PyBuffer_Release(&b);
    return result;
}

static PyObject *py_ivf_probe(PyObject *self, PyObject *args) {
    PyObject *oq, *oqb, *oc, *os, *ocb, *ocounts, *oout;
    Py_ssize_t nprobe, want, shortlist;
    int isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOnnniiO", &oq, &oqb, &oc, &os, &ocb, &ocounts, &nprobe, &want, &shortlist,
                          &isa, &nthreads, &oout))
        return NULL;
    if (nprobe < 1) return PyErr_Format(PyExc_ValueError, "nprobe must be >= 1, got %zd", nprobe);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers bs = {.count = 0};
    Py_buffer *q, *qb = NULL, *c, *sc, *cb = NULL, *cn = NULL, *out;
    if (!(q = take(&bs, oq, 0, 2, 4, "f", "queries"))) goto fail;
    if (oqb != Py_None && !(qb = take(&bs, oqb, 0, 2, 1, "B", "query_bits"))) goto fail;
    if (!(c = take(&bs, oc, 0, 2, 1, "b", "centroids"))) goto fail;
    if (!(sc = take(&bs, os, 0, 1, 4, "f", "scale"))) goto fail;
    if (ocb != Py_None && !(cb = take(&bs, ocb, 0, 2, 1, "B", "centroid_bits"))) goto fail;
    if (ocounts != Py_None && !(cn = take(&bs, ocounts, 0, 1, 8, "lq", "counts"))) goto fail;
    if (!(out = take(&bs, oout, 1, 2, 4, "i", "out"))) goto fail;
    const Py_ssize_t nq = q->shape[0], dim = q->shape[1], nlist = c->shape[0];
    const Py_ssize_t nbits = cb ? cb->shape[1] : 0;
    if (c->shape[1] != dim || sc->shape[0] != nlist || (cn && cn->shape[0] != nlist) || out->shape[0] != nq ||
        nlist >= INT32_MAX || (!qb) != (!cb) || (qb && (qb->shape[0] != nq || qb->shape[1] != nbits)) ||
        (cb && cb->shape[0] != nlist)) {
        PyErr_SetString(PyExc_ValueError, "ivf_probe: queries, centroids, bits, counts and out disagree in shape");
        goto fail;
    }
    int rc = 0;
    if (nq > 0 && out->shape[1] > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_ivf_probe((const float *)q->buf, qb ? (const uint8_t *)qb->buf : NULL, nq, dim,
                          (const int8_t *)c->buf, (const float *)sc->buf, cb ? (const uint8_t *)cb->buf : NULL,
                          nbits, nlist, cn ? (const int64_t *)cn->buf : NULL, nprobe, want, out->shape[1],
                          shortlist, isa, nthreads, (int32_t *)out->buf);
        Py_END_ALLOW_THREADS;
    }
    release_all(&bs);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&bs);
    return NULL;
}

static PyObject *py_ivf_scan(PyObject *self, PyObject *args) {
    PyObject *oq, *oc, *oorder, *ooff, *oprobes, *ov, *od, *orr;
    Py_ssize_t n_rows, k;
    int isa, nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnOOOOniiOO", &oq, &oc, &n_rows, &oorder, &ooff, &oprobes, &ov, &k, &isa,
                          &nthreads, &od, &orr))
        return NULL;
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1, got %zd", k);
    if (nthreads < 1) return PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got %d", nthreads);
    if (check_isa(isa) < 0) return NULL;
    buffers bs = {.count = 0};
    Py_buffer *q, *c, *o, *off, *pr, *v = NULL, *d, *r;
    if (!(q = take(&bs, oq, 0, 2, 1, "B", "queries"))) goto fail;
    if (!(c = take(&bs, oc, 0, 2, 1, "B", "codes"))) goto fail;
    if (!(o = take(&bs, oorder, 0, 1, 4, "i", "order"))) goto fail;
    if (!(off = take(&bs, ooff, 0, 1, 8, "lq", "offsets"))) goto fail;
    if (!(pr = take(&bs, oprobes, 0, 2, 4, "i", "probes"))) goto fail;
    if (ov != Py_None && !(v = take(&bs, ov, 0, 1, 1, "?B", "valid"))) goto fail;
    if (!(d = take(&bs, od, 1, 2, 4, "i", "out_dist"))) goto fail;
    if (!(r = take(&bs, orr, 1, 2, 8, "lq", "out_rows"))) goto fail;
    const Py_ssize_t nq = q->shape[0], nb = q->shape[1];
    const Py_ssize_t nlist = off->shape[0] - 1;
    if (c->shape[1] != nb || nb < 1 || n_rows < 0 || n_rows > c->shape[0] || (v && v->shape[0] < n_rows) ||
        nlist < 0 || pr->shape[0] != nq || d->shape[0] != nq || d->shape[1] != k || r->shape[0] != nq ||
        r->shape[1] != k || c->shape[0] > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "ivf_scan: queries, codes, lists, probes and outputs disagree in shape");
        goto fail;
    }
    int rc = 0;
    if (nq > 0 && nlist > 0) {
        Py_BEGIN_ALLOW_THREADS;
        rc = qs_ivf_scan((const uint8_t *)q->buf, nq, nb, (const uint8_t *)c->buf, n_rows, (const int32_t *)o->buf,
                         o->shape[0], (const int64_t *)off->buf, nlist, (const int32_t *)pr->buf, pr->shape[1],
                         v ? (const uint8_t *)v->buf : NULL, k, isa, nthreads, (int32_t *)d->buf,
                         (int64_t *)r->buf);
        Py_END_ALLOW_THREADS;
    } else {
        for (Py_ssize_t i = 0; i < nq * k; i++) {
            ((int32_t *)d->buf)[i] = INT32_MAX;
            ((int64_t *)r->buf)[i] = -1;
        }
    }
    release_all(&bs);
    if (rc == -2) return PyErr_Format(PyExc_ValueError, "ivf_scan: offsets must ascend within [0, len(order)]");
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    release_all(&bs);
    return NULL;
}

static PyObject *py_stream_xor(PyObject *self, PyObject *args) {
    PyObject *obj;
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &isa)) return NULL;
    if (check_isa(isa) < 0) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    uint64_t x;
    Py_BEGIN_ALLOW_THREADS;
    x = qs_stream_xor((const uint8_t *)view.buf, (size_t)view.len, isa);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(x);
}

static PyObject *py_thread_work_bytes(PyObject *self, PyObject *args) {
    Py_ssize_t value = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|n", &value)) return NULL;
    return PyLong_FromSsize_t((Py_ssize_t)qs_thread_work_bytes((int64_t)value));
}

static PyObject *py_nearest_blocks(PyObject *self, PyObject *args) {
    PyObject *y_obj, *c_obj, *h_obj, *out_obj;
    Py_ssize_t first;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnOOO", &y_obj, &first, &c_obj, &h_obj, &out_obj)) return NULL;
    Py_buffer y, c, h, out;
    if (get_array(y_obj, &y, 0, 2, 4, "f", "y") < 0) return NULL;
    if (get_array(c_obj, &c, 0, 3, 4, "f", "centroids_t") < 0) goto fail_y;
    if (get_array(h_obj, &h, 0, 2, 4, "f", "half") < 0) goto fail_c;
    if (get_array(out_obj, &out, 1, 2, 8, "qlL", "out") < 0) goto fail_h;
    /* centroids_t: (reps, width, parts), the centroids transposed per repetition */
    Py_ssize_t n = y.shape[0], row_len = y.shape[1], reps = c.shape[0], width = c.shape[1], parts = c.shape[2];
    if (h.shape[0] != reps || h.shape[1] != parts || out.shape[0] != n || out.shape[1] != reps || parts < 1 ||
        parts > QS_NEAREST_MAX_PARTS || first < 0 || first + reps * width > row_len) {
        PyErr_SetString(PyExc_ValueError, "nearest_blocks: shapes of y, centroids, half and out disagree");
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS;
    qs_nearest_blocks((const float *)y.buf, (int64_t)n, (int64_t)row_len, (int64_t)first, (int64_t)reps,
                      (int64_t)parts, (int64_t)width, (const float *)c.buf, (const float *)h.buf,
                      (int64_t *)out.buf);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&out);
    PyBuffer_Release(&h);
    PyBuffer_Release(&c);
    PyBuffer_Release(&y);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&out);
fail_h:
    PyBuffer_Release(&h);
fail_c:
    PyBuffer_Release(&c);
fail_y:
    PyBuffer_Release(&y);
    return NULL;
}

static PyObject *py_scatter_add_rows(PyObject *self, PyObject *args) {
    PyObject *src_obj, *offsets_obj, *rows_obj, *dst_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO", &src_obj, &offsets_obj, &rows_obj, &dst_obj)) return NULL;
    Py_buffer src, offsets, rows, dst;
    if (get_array(src_obj, &src, 0, 1, 4, "f", "src") < 0) return NULL;
    if (get_array(offsets_obj, &offsets, 0, 1, 8, "qlL", "src_offsets") < 0) goto fail_src;
    if (get_array(rows_obj, &rows, 0, 1, 8, "qlL", "dst_rows") < 0) goto fail_offsets;
    if (get_array(dst_obj, &dst, 1, 2, 4, "f", "dst") < 0) goto fail_rows;
    Py_ssize_t width = dst.shape[1], m = offsets.shape[0], n_src = src.shape[0];
    const int64_t *so = (const int64_t *)offsets.buf, *dr = (const int64_t *)rows.buf;
    if (rows.shape[0] != m) {
        PyErr_SetString(PyExc_ValueError, "scatter_add_rows: src_offsets and dst_rows differ in length");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        if (so[i] < 0 || so[i] > n_src - width || dr[i] < 0 || dr[i] >= dst.shape[0]) {
            PyErr_Format(PyExc_ValueError, "scatter_add_rows: pair %zd (%lld -> %lld) is out of bounds", i,
                         (long long)so[i], (long long)dr[i]);
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS;
    qs_scatter_add_rows((const float *)src.buf, so, dr, (int64_t)m, (int64_t)width, (float *)dst.buf);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&dst);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&dst);
fail_rows:
    PyBuffer_Release(&rows);
fail_offsets:
    PyBuffer_Release(&offsets);
fail_src:
    PyBuffer_Release(&src);
    return NULL;
}

static PyMethodDef methods[] = {
    {"isa_supported", py_isa_supported, METH_VARARGS,
     "isa_supported(isa) -> bool: whether this CPU runs the given instruction set (0 portable, 1 AVX2, 2 AVX-512)."},
    {"hamming_topk", py_hamming_topk, METH_VARARGS,
     "hamming_topk(queries, codes, valid, k, isa, strategy, nthreads, block_bytes, out_dist, out_rows)"},
    {"rescore", py_rescore, METH_VARARGS,
     "rescore(arrays, starts, rows, weights, kind, offset, isa, nthreads, out)"},
    {"planes_topk", py_planes_topk, METH_VARARGS,
     "planes_topk(codes, valid, k, planes, dim, weights, query_bits, query_planes, lo, delta, plane_coef, "
     "row_scale, row_bias, query_offset, isa, strategy, nthreads, block_bytes, and_term, out_scores, out_rows)"},
    {"blocks_topk", py_blocks_topk, METH_VARARGS,
     "blocks_topk(codes, valid, k, weights, kind, isa, nthreads, out_scores, out_rows): top-k of ggml block rows"},
    {"nibble_scan", py_nibble_scan, METH_VARARGS,
     "nibble_scan(codes, valid, k, layout, queries, levels, row_scale, scale_at, row_bias, query_offset, score_bias, "
     "isa, nthreads, block_bytes, out_scores, out_rows): nibble_topk with the tables built from the queries"},
    {"nibble_topk", py_nibble_topk, METH_VARARGS,
     "nibble_topk(codes, valid, k, layout, luts, lo, delta, row_scale, scale_at, row_bias, query_offset, isa, nthreads, block_bytes, "
     "out_scores, out_rows): top-k of 2-bit plane or base-3 codes from nibble tables"},
    {"table_topk", py_table_topk, METH_VARARGS,
     "table_topk(codes, valid, k, tables, row_scale, row_bias, query_offset, nthreads, block_bytes, out_scores, "
     "out_rows)"},
    {"ivf_probe", py_ivf_probe, METH_VARARGS,
     "ivf_probe(queries, query_bits, centroids_i8, scale, centroid_bits, counts, nprobe, want, shortlist, isa, nthreads, "
     "out): lists of each query"},
    {"ivf_scan", py_ivf_scan, METH_VARARGS,
     "ivf_scan(queries, codes, n_rows, order, offsets, probes, valid, k, isa, nthreads, out_dist, out_rows)"},
    {"willneed_rows", py_willneed_rows, METH_VARARGS,
     "willneed_rows(bases, nrows, starts, row_bytes, rows, bitmaps, sample=0) -> (madvise calls, pages hinted)"},
    {"thread_work_bytes", py_thread_work_bytes, METH_VARARGS,
     "thread_work_bytes(value=-1) -> int: popcount bytes per added scan thread; sets it when value >= 0 and "
     "returns the previous value."},
    {"stream_xor", py_stream_xor, METH_VARARGS,
     "stream_xor(buffer, isa) -> int: XOR of every byte-aligned word; a one-pass read (bandwidth probe)."},
    {"nearest_blocks", py_nearest_blocks, METH_VARARGS,
     "nearest_blocks(y, first, centroids_t, half, out): out[i, j] = argmax_c <y[i, first + j*w:][:w], "
     "centroids_t[j, :, c]> - half[j, c] (float32; ties to the smaller c)."},
    {"scatter_add_rows", py_scatter_add_rows, METH_VARARGS,
     "scatter_add_rows(src, src_offsets, dst_rows, dst): dst[dst_rows[i]] += src[src_offsets[i]:][:width] (float32)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Native kernels of quantsearch (see quantsearch.kernels).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
