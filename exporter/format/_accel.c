/* A steady poll's per-sample work in one C pass: exporter.format.accel's compiled twin.
 *
 * split(data) -> (values, count, shape, None)
 *     The sample lines of an exposition body as exporter.format.accel.PLAIN_SAMPLE finds them
 *     (`re.split` on b"\n" + data), read in one pass: `values`, the list of float(value) of each line
 *     (None when one is not a number, as float() refuses it), `count`, the number of lines, and `shape`,
 *     what the body key hashes: the length of every piece between sample lines (native uint64), those
 *     pieces, and the lines' series joined by newlines. (The pure-Python twin also hands back the
 *     regular expression's split it made; this one makes none: None.)
 *
 * fill(heads, sizes, values, slow, exponents) -> list[bytes]
 *     Sample lines `head + text(value) + "\n"`, cut into pieces of `sizes` lines each. text(v) is
 *     repr(v) for an exact float with -1e6 < v < 1e6, Go's exponent form (go_exponent) for one with
 *     1e6 <= v < 1e16 when `exponents` is true, else slow(v) (a str).
 *
 * holds(values, rules) -> bool
 *     Whether a list of floats keeps every rule: `rules` is runs of four native int64 (kind, first
 *     position, first second position, length), the kinds in accel.RULES' order: IndexError where a
 *     run reads past the values, else TypeError where a value it reads is not a float, else whether
 *     every rule holds.
 *
 * Every byte of `data` is an upstream's: every read is bounded by its length, and what is allocated
 * is bounded by it (or by the number of heads and values for `fill`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* [!-^`-~]: printable ASCII but for the blank, `_` and DEL */
static inline int is_value_char(unsigned char c) { return c >= '!' && c <= '~' && c != '_'; }
static inline int is_name_first(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
static inline int is_name_char(unsigned char c) { return is_name_first(c) || (c >= '0' && c <= '9'); }

typedef struct {
    Py_ssize_t start;        /* the newline the match starts at (-1: the one put in front of the body) */
    Py_ssize_t series_end;   /* the series is data[start + 1, series_end) */
    Py_ssize_t value_start;  /* the value is data[value_start, value_end) */
    Py_ssize_t value_end;
    Py_ssize_t end;          /* just past the match: the next newline, or the body's end */
} Match;

/* The match of PLAIN_SAMPLE at the newline at `nl` (-1: the one in front), or 0. `eol`: the next
 * newline after it, or the body's end: nothing at or past it is read. */
static int match_at(const unsigned char *s, Py_ssize_t nl, Py_ssize_t eol, Match *m) {
    Py_ssize_t i = nl + 1;
    if (i >= eol || !is_name_first(s[i]))
        return 0;
    i++;
    while (i < eol && is_name_char(s[i]))
        i++;
    if (i >= eol)
        return 0;
    Py_ssize_t series_end;
    Py_ssize_t blank;
    if (s[i] == ' ') {
        series_end = i;
        blank = i;
    } else if (s[i] == '{') {
        /* `\{[^\n]*\}` then ` value\r?`: a value has no blank, so the blank is the line's last one,
         * right after the `}` that closes the series. */
        Py_ssize_t b = eol - 1;
        while (b > i && s[b] != ' ')
            b--;
        if (b <= i + 1 || s[b] != ' ' || s[b - 1] != '}')
            return 0;
        series_end = b;
        blank = b;
    } else {
        return 0;
    }
    Py_ssize_t v = blank + 1;
    Py_ssize_t e = v;
    while (e < eol && is_value_char(s[e]))
        e++;
    if (e == v)
        return 0;
    Py_ssize_t after = e;
    if (after < eol && s[after] == '\r')
        after++;
    if (after != eol)
        return 0;
    m->start = nl;
    m->series_end = series_end;
    m->value_start = v;
    m->value_end = e;
    m->end = eol;
    return 1;
}

/* Exact powers of ten: each a double without rounding. */
static const double POWERS_OF_TEN[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A plain decimal (`-12`, `3.25`, `.5`: no exponent) whose digits make an integer below 2**53 and that
 * has at most 22 digits after its point: then integer / 10**k, both exact doubles, is the correctly
 * rounded value (IEEE division rounds correctly), which is what float() gives. 1: read; 0: not such a
 * token (read_float then asks Python's own reader). */
static int read_plain_decimal(const unsigned char *token, Py_ssize_t size, double *out) {
    Py_ssize_t i = 0;
    int negative = 0;
    if (i < size && (token[i] == '-' || token[i] == '+'))
        negative = token[i++] == '-';
    uint64_t mantissa = 0;
    int digits = 0, after_point = -1;
    for (; i < size; i++) {
        unsigned char c = token[i];
        if (c >= '0' && c <= '9') {
            if (++digits > 16)
                return 0;
            mantissa = mantissa * 10 + (uint64_t)(c - '0');
            if (after_point >= 0)
                after_point++;
        } else if (c == '.' && after_point < 0) {
            after_point = 0;
        } else {
            return 0;
        }
    }
    if (digits == 0 || mantissa >= ((uint64_t)1 << 53) || after_point > 22)
        return 0;
    double value = (double)mantissa;
    if (after_point > 0)
        value /= POWERS_OF_TEN[after_point];
    *out = negative ? -value : value;
    return 1;
}

/* float(token) as Python reads bytes: the whole token, or not a number (-1 returned). */
static int read_float(const unsigned char *token, Py_ssize_t size, double *out) {
    if (read_plain_decimal(token, size, out))
        return 0;
    char small[64];
    char *copy = small;
    if (size >= (Py_ssize_t)sizeof(small)) {
        copy = PyMem_Malloc((size_t)size + 1);
        if (copy == NULL) {
            PyErr_NoMemory();
            return -2;
        }
    }
    memcpy(copy, token, (size_t)size);
    copy[size] = '\0';
    char *end = NULL;
    double value = PyOS_string_to_double(copy, &end, NULL);
    int ok = 0;
    if (value == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            ok = -2;
        } else {
            PyErr_Clear();
            ok = -1;
        }
    } else if (end != copy + size) {
        ok = -1;
    }
    if (copy != small)
        PyMem_Free(copy);
    *out = value;
    return ok;
}

static PyObject *split(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "split() takes bytes");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);

    Py_ssize_t capacity = 64, count = 0;
    Match *matches = PyMem_Malloc(capacity * sizeof(Match));
    if (matches == NULL)
        return PyErr_NoMemory();
    /* Each newline (and the one in front) may start a match; a match ends at the next newline, where
     * the next may start: every line is looked at once. */
    Py_ssize_t nl = -1;
    while (nl < n) {
        const unsigned char *found = nl + 1 < n ? memchr(s + nl + 1, '\n', (size_t)(n - nl - 1)) : NULL;
        Py_ssize_t eol = found == NULL ? n : (Py_ssize_t)(found - s);
        Match m;
        if (match_at(s, nl, eol, &m)) {
            if (count == capacity) {
                Py_ssize_t more = capacity * 2;
                Match *grown = PyMem_Realloc(matches, more * sizeof(Match));
                if (grown == NULL) {
                    PyMem_Free(matches);
                    return PyErr_NoMemory();
                }
                matches = grown;
                capacity = more;
            }
            matches[count++] = m;
        }
        nl = eol;
    }

    /* shape: (count + 1) lengths, the pieces between matches, the series joined by newlines */
    Py_ssize_t between = 1 + n, series = count > 0 ? count - 1 : 0;  /* b"\n" + data, less the matches */
    for (Py_ssize_t k = 0; k < count; k++) {
        between -= matches[k].end - matches[k].start;
        series += matches[k].series_end - (matches[k].start + 1);
    }
    Py_ssize_t lengths = (count + 1) * (Py_ssize_t)sizeof(uint64_t);
    PyObject *shape = PyBytes_FromStringAndSize(NULL, lengths + between + series);
    PyObject *values = PyList_New(count);
    PyObject *result = NULL;
    if (shape == NULL || values == NULL)
        goto done;
    char *out = PyBytes_AS_STRING(shape);
    char *piece = out + lengths, *line = out + lengths + between;
    Py_ssize_t at = -1; /* where the next piece starts in b"\n" + data, less one */
    for (Py_ssize_t k = 0; k <= count; k++) {
        Py_ssize_t upto = k < count ? matches[k].start : n;
        uint64_t size = (uint64_t)(upto - at);
        memcpy(out + k * sizeof(uint64_t), &size, sizeof(size));
        if (upto > at) {
            if (at < 0) {
                *piece++ = '\n';
                memcpy(piece, s, (size_t)upto);
                piece += upto;
            } else {
                memcpy(piece, s + at, (size_t)(upto - at));
                piece += upto - at;
            }
        }
        if (k == count)
            break;
        Match *m = &matches[k];
        if (k > 0)
            *line++ = '\n';
        memcpy(line, s + m->start + 1, (size_t)(m->series_end - m->start - 1));
        line += m->series_end - m->start - 1;
        at = m->end;
    }
    for (Py_ssize_t k = 0; k < count && values != Py_None; k++) {
        double value;
        int ok = read_float(s + matches[k].value_start, matches[k].value_end - matches[k].value_start, &value);
        if (ok == -2)
            goto done;
        if (ok == -1) {
            Py_DECREF(values);
            values = Py_NewRef(Py_None);
            break;
        }
        PyObject *number = PyFloat_FromDouble(value);
        if (number == NULL)
            goto done;
        PyList_SET_ITEM(values, k, number);
    }
    result = Py_BuildValue("(OnOO)", values, count, shape, Py_None);
done:
    PyMem_Free(matches);
    Py_XDECREF(shape);
    Py_XDECREF(values);
    return result;
}

/* Go's text of an exact float from a million up to 1e16, made of its repr (as exporter.format.accel's
 * go_exponent does): the point moved after the first digit, trailing zeros and point dropped, and the
 * exponent, two digits. Its length, or -1 with an exception set. `out` has room for 64 bytes. */
static Py_ssize_t go_exponent(double v, char *out) {
    char *made = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (made == NULL)
        return -1;
    size_t length = strlen(made);
    char *dot = strchr(made, '.');
    size_t point = dot == NULL ? 0 : (size_t)(dot - made);
    if (dot == NULL || point < 1 || length > 40) { /* not a repr of such a float */
        PyMem_Free(made);
        PyErr_SetString(PyExc_SystemError, "go_exponent(): an unexpected repr");
        return -1;
    }
    size_t k = 0;
    out[k++] = made[0];
    out[k++] = '.';
    memcpy(out + k, made + 1, point - 1);
    k += point - 1;
    memcpy(out + k, dot + 1, length - point - 1);
    k += length - point - 1;
    PyMem_Free(made);
    while (k > 0 && (out[k - 1] == '0' || out[k - 1] == '.'))
        k--;
    int written = snprintf(out + k, 64 - k, "e+%02d", (int)(point - 1));
    if (written < 0 || (size_t)written >= 64 - k) {
        PyErr_SetString(PyExc_SystemError, "go_exponent(): no room");
        return -1;
    }
    return (Py_ssize_t)(k + (size_t)written);
}

/* The text of a whole number (a count, most of a body's values) as value_text writes it, without
 * dtoa: the digits and ".0" (repr) for one of magnitude under a million, or where `exponents`, Go's
 * exponent form (go_exponent) for one from a million up to 1e16, made of the same digits: the first,
 * a point, the rest less trailing zeros, "e+" and the exponent. 0 for any other value (-0.0, which
 * repr writes with its sign, included): the caller goes the general way. `out` has room for 64 bytes. */
static Py_ssize_t whole_text(double v, int exponents, char *out) {
    if (v == 0.0) {
        if (signbit(v))
            return 0;
        memcpy(out, "0.0", 3);
        return 3;
    }
    if (!(v > -1e6 && v < (exponents ? 1e16 : 1e6)))
        return 0;
    long long whole = (long long)v;
    if ((double)whole != v)
        return 0;
    char digits[24];
    int count = 0;
    for (unsigned long long left = (unsigned long long)(whole < 0 ? -whole : whole); left; left /= 10)
        digits[count++] = (char)('0' + left % 10);
    Py_ssize_t k = 0;
    if (whole < 0)
        out[k++] = '-';
    if (v > -1e6 && v < 1e6) { /* repr: every digit, then ".0" */
        while (count)
            out[k++] = digits[--count];
        memcpy(out + k, ".0", 2);
        return k + 2;
    }
    int exponent = count - 1, last = 0; /* Go: d.ddd less trailing zeros, e+XX */
    while (last < count - 1 && digits[last] == '0')
        last++;
    out[k++] = digits[--count];
    if (count > last) {
        out[k++] = '.';
        while (count > last)
            out[k++] = digits[--count];
    }
    return k + snprintf(out + k, 64 - (size_t)k, "e+%02d", exponent);
}

/* One value's text: repr(v) for an exact float of magnitude under a million, Go's exponent form for one
 * from a million up to 1e16 where `exponents` says prometheus_client writes that, else slow(v). Returns
 * a new reference: None where the text was written into `buffer` (64 bytes), else the str slow gave;
 * the caller reads the text through `text`/`size` while it holds that reference. */
static PyObject *value_text(PyObject *value, PyObject *slow, int exponents, char *buffer, const char **text,
                            Py_ssize_t *size) {
    if (PyFloat_CheckExact(value)) {
        double v = PyFloat_AS_DOUBLE(value);
        Py_ssize_t length = whole_text(v, exponents, buffer);
        if (length > 0) {
            *text = buffer;
            *size = length;
            return Py_NewRef(Py_None);
        }
        if (v > -1e6 && v < 1e6) {
            char *made = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (made == NULL)
                return NULL;
            size_t length = strlen(made);
            if (length >= 64) { /* a repr is at most 24 bytes */
                PyMem_Free(made);
                PyErr_SetString(PyExc_SystemError, "fill(): an unexpected repr");
                return NULL;
            }
            memcpy(buffer, made, length);
            PyMem_Free(made);
            *text = buffer;
            *size = (Py_ssize_t)length;
            return Py_NewRef(Py_None);
        }
        if (exponents && v >= 1e6 && v < 1e16) {
            Py_ssize_t length = go_exponent(v, buffer);
            if (length < 0)
                return NULL;
            *text = buffer;
            *size = length;
            return Py_NewRef(Py_None);
        }
    }
    PyObject *str = PyObject_CallOneArg(slow, value);
    if (str == NULL)
        return NULL;
    if (!PyUnicode_Check(str)) {
        PyErr_SetString(PyExc_TypeError, "fill(): the slow rule must give a str");
        Py_DECREF(str);
        return NULL;
    }
    *text = PyUnicode_AsUTF8AndSize(str, size);
    if (*text == NULL) {
        Py_DECREF(str);
        return NULL;
    }
    return str;
}

/* A growable byte buffer. */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

static int buffer_add(Buffer *b, const char *text, Py_ssize_t size) {
    if (size == 0) /* nothing to copy (and no buffer yet, maybe: memcpy must not be given NULL) */
        return 0;
    if (b->size + size > b->capacity) {
        Py_ssize_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->size + size) {
            if (capacity > PY_SSIZE_T_MAX / 2) {
                PyErr_NoMemory();
                return -1;
            }
            capacity *= 2;
        }
        char *grown = PyMem_Realloc(b->data, (size_t)capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, text, (size_t)size);
    b->size += size;
    return 0;
}

static PyObject *fill(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fill() takes heads, sizes, values, slow and exponents");
        return NULL;
    }
    int exponents = PyObject_IsTrue(args[4]);
    if (exponents < 0)
        return NULL;
    PyObject *heads = args[0], *sizes = args[1], *slow = args[3];
    if (!PyTuple_Check(heads) || !PyTuple_Check(sizes)) {
        PyErr_SetString(PyExc_TypeError, "fill(): heads and sizes are tuples");
        return NULL;
    }
    Py_ssize_t lines = PyTuple_GET_SIZE(heads), pieces = PyTuple_GET_SIZE(sizes);
    /* The values are read between calls of Python code (`slow`, a size's __index__), which could change
     * a list they came in: a list's first `lines` are taken at once (as python_fill's slice takes them),
     * so that no item is read from a list changed, or freed, since. A tuple cannot change; any other
     * sequence is copied into a list of our own. */
    PyObject *values = PyList_Check(args[2]) ? PyList_GetSlice(args[2], 0, lines)
                                             : PySequence_Fast(args[2], "fill(): values must be a sequence");
    if (values == NULL)
        return NULL;
    PyObject *result = NULL, *out = NULL;
    Buffer buffer = {NULL, 0, 0};
    if (PySequence_Fast_GET_SIZE(values) < lines) {
        PyErr_SetString(PyExc_ValueError, "fill(): fewer values than lines");
        goto done;
    }
    out = PyList_New(pieces);
    if (out == NULL)
        goto done;
    PyObject **items = PySequence_Fast_ITEMS(values);
    Py_ssize_t line = 0;
    for (Py_ssize_t p = 0; p < pieces; p++) {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, p));
        if (size == -1 && PyErr_Occurred())
            goto done;
        if (size < 0 || size > lines - line) {
            PyErr_SetString(PyExc_ValueError, "fill(): the sizes do not add up to the heads");
            goto done;
        }
        buffer.size = 0;
        for (Py_ssize_t end = line + size; line < end; line++) {
            PyObject *head = PyTuple_GET_ITEM(heads, line);
            if (!PyBytes_Check(head)) {
                PyErr_SetString(PyExc_TypeError, "fill(): a head must be bytes");
                goto done;
            }
            char small[64];
            const char *text;
            Py_ssize_t length;
            PyObject *keep = value_text(items[line], slow, exponents, small, &text, &length);
            if (keep == NULL)
                goto done;
            int failed = buffer_add(&buffer, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)) ||
                         buffer_add(&buffer, text, length) || buffer_add(&buffer, "\n", 1);
            Py_DECREF(keep);
            if (failed)
                goto done;
        }
        PyObject *bytes = PyBytes_FromStringAndSize(buffer.data ? buffer.data : "", buffer.size);
        if (bytes == NULL)
            goto done;
        PyList_SET_ITEM(out, p, bytes);
    }
    result = Py_NewRef(out);
done:
    PyMem_Free(buffer.data);
    Py_XDECREF(out);
    Py_DECREF(values);
    return result;
}

/* The rules exporter.pipeline.conform checks a family's values by, one per kind of run (accel.RULES). */
enum { NONNEG, NOT_NEGATIVE, INTEGER, NOT_NAN, ONE, BOOL, ORDERED, EQUAL, KINDS };

/* Reads run `r` of `rules` into kind, a, b, n; 0, or -1 with IndexError where it reads past `count` values. */
static int read_run(const char *rules, Py_ssize_t r, Py_ssize_t count, int64_t *kind, int64_t *a, int64_t *b,
                    int64_t *n) {
    int64_t run[4]; /* kind, first position, first second position (ordered, equal), length */
    memcpy(run, rules + 32 * r, sizeof(run));
    *kind = run[0], *a = run[1], *b = run[2], *n = run[3];
    int pair = *kind == ORDERED || *kind == EQUAL;
    if (*kind < 0 || *kind >= KINDS || *n < 0 || *a < 0 || *a > count - *n || (pair && (*b < 0 || *b > count - *n))) {
        PyErr_SetString(PyExc_IndexError, "holds(): a rule reads past the values");
        return -1;
    }
    return 0;
}

static PyObject *holds(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) % 32) {
        PyErr_SetString(PyExc_TypeError, "holds() takes values and rules (runs of four int64)");
        return NULL;
    }
    PyObject *values = PySequence_Fast(args[0], "holds(): values must be a sequence");
    if (values == NULL)
        return NULL;
    PyObject **items = PySequence_Fast_ITEMS(values), *result = Py_True;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values), runs = PyBytes_GET_SIZE(args[1]) / 32;
    const char *rules = PyBytes_AS_STRING(args[1]);
    int64_t kind, a, b, n;
    /* First every run is within the values, then every value read is a float, then the rules: what
     * comes out does not depend on the order of the runs. */
    for (Py_ssize_t r = 0; r < runs && result != NULL; r++)
        if (read_run(rules, r, count, &kind, &a, &b, &n) < 0)
            result = NULL;
    for (Py_ssize_t r = 0; r < runs && result != NULL; r++) {
        read_run(rules, r, count, &kind, &a, &b, &n); /* checked above */
        int pair = kind == ORDERED || kind == EQUAL;
        for (int64_t k = 0; k < n; k++) {
            if (!PyFloat_CheckExact(items[a + k]) || (pair && !PyFloat_CheckExact(items[b + k]))) {
                PyErr_SetString(PyExc_TypeError, "holds(): the values must be floats");
                result = NULL;
                break;
            }
        }
    }
    for (Py_ssize_t r = 0; r < runs && result == Py_True; r++) {
        read_run(rules, r, count, &kind, &a, &b, &n); /* checked above */
        int pair = kind == ORDERED || kind == EQUAL;
        for (int64_t k = 0; k < n && result == Py_True; k++) {
            double v = PyFloat_AS_DOUBLE(items[a + k]), w = pair ? PyFloat_AS_DOUBLE(items[b + k]) : v;
            int kept;
            switch (kind) {
            case NONNEG: kept = v >= 0.0; break;
            case NOT_NEGATIVE: kept = !(v < 0.0); break;
            case INTEGER: kept = isfinite(v) && floor(v) == v; break;
            case NOT_NAN: kept = v == v; break;
            case ONE: kept = v == 1.0; break;
            case BOOL: kept = v == 0.0 || v == 1.0; break;
            case ORDERED: kept = v <= w; break;
            default: kept = v == w; break; /* EQUAL */
            }
            if (!kept)
                result = Py_False;
        }
    }
    Py_DECREF(values);
    return Py_XNewRef(result);
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)split, METH_O, "split(data) -> (values or None, count, shape, None)"},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL, "fill(heads, sizes, values, slow, exponents) -> list[bytes]"},
    {"holds", (PyCFunction)(void (*)(void))holds, METH_FASTCALL, "holds(values, rules) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_accel", "A steady poll's per-sample work in C (exporter.format.accel).", -1, methods,
    NULL, NULL, NULL, NULL,
};

#ifndef ACCEL_SOURCE
#define ACCEL_SOURCE ""
#endif

/* SOURCE: the SHA-256 (hex) of the _accel.c this was built from, as hatch_build.py defines it: a module
 * built from another version of this file is not used (exporter.format.accel). */
PyMODINIT_FUNC PyInit__accel(void) {
    PyObject *made = PyModule_Create(&module);
    if (made != NULL && PyModule_AddStringConstant(made, "SOURCE", ACCEL_SOURCE) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
