/* observability._speedups: score_confidence's loop (observability/_score.py) over OpenAI chat
 * entries read straight from the provider's dicts, in C, and the low-confidence spans of
 * observability._score._spans for the common case (every token holding whole characters).
 *
 * Optional: when this file cannot be compiled (no C compiler at install time) the handler
 * extracts tokens and runs score_confidence, which gives the identical report. The two must stay
 * the same operations in the same order: tests/test_core_fastpath.py compares their reports
 * float for float on random payloads, and setup.py compiles with -ffp-contract=off so that no
 * multiply-add is fused (a fused one rounds once, Python rounds twice). Standard C and the
 * CPython API only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

static PyObject *key_logprob, *key_top_logprobs, *key_bytes, *key_token;

/* Borrowed lookup; NULL with no error when the key is missing. */
static PyObject *get(PyObject *dict, PyObject *key) { return PyDict_GetItemWithError(dict, key); }

/* The number of characters of one token's UTF-8 piece when it decodes on its own (what
 * observability._text._whole_characters requires), else -1: the caller then leaves the offsets
 * to Python, which handles every other case. -2 with an exception set on a real error. */
static Py_ssize_t piece_length(PyObject *entry) {
    PyObject *raw = get(entry, key_bytes);
    if (raw == NULL && PyErr_Occurred()) return -2;
    if (raw == NULL || raw == Py_None) {
        PyObject *token = get(entry, key_token);
        if (token == NULL && PyErr_Occurred()) return -2;
        if (token == NULL || token == Py_None) return 0; /* no text at all: an empty piece */
        if (PyUnicode_CheckExact(token) && PyUnicode_IS_ASCII(token)) return PyUnicode_GET_LENGTH(token);
        return -1;
    }
    char small[64];
    char *buffer = small;
    Py_ssize_t size;
    int ascii = 1;
    if (PyBytes_CheckExact(raw)) {
        buffer = PyBytes_AS_STRING(raw);
        size = PyBytes_GET_SIZE(raw);
        for (Py_ssize_t i = 0; i < size; i++) ascii &= ((unsigned char)buffer[i] < 0x80);
    } else if (PyList_CheckExact(raw)) {
        size = PyList_GET_SIZE(raw);
        if (size > (Py_ssize_t)sizeof(small)) return -1; /* a token that long: leave it to Python */
        for (Py_ssize_t i = 0; i < size; i++) {
            PyObject *item = PyList_GET_ITEM(raw, i);
            if (!PyLong_CheckExact(item)) return -1;
            long value = PyLong_AsLong(item);
            if (value == -1 && PyErr_Occurred()) { PyErr_Clear(); return -1; }
            if (value < 0 || value > 255) return -1;
            small[i] = (char)value;
            ascii &= (value < 0x80);
        }
    } else {
        return -1;
    }
    if (ascii) return size;
    PyObject *text = PyUnicode_DecodeUTF8(buffer, size, "strict");
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -2;
        PyErr_Clear();
        return -1; /* part of a character, or invalid: not a whole-characters response */
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    Py_DECREF(text);
    return length;
}

/* LowConfidenceSpan, and its four slots in field order, given once by use_span_type(). */
static PyTypeObject *span_type;
static PyMemberDef *span_slots[4];
static const char *span_fields[4] = {"start", "end", "min_probability", "token_count"};

/* use_span_type(cls): the class whose instances build_spans makes, by filling its four slots
 * directly (a frozen dataclass's __init__ sets each through object.__setattr__: ten times slower). */
static PyObject *use_span_type(PyObject *module, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "use_span_type expects a class");
        return NULL;
    }
    PyObject *attributes = ((PyTypeObject *)cls)->tp_dict;
    PyMemberDef *slots[4];
    for (int i = 0; i < 4; i++) {
        PyObject *descr = PyDict_GetItemString(attributes, span_fields[i]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%R has no slot %s", cls, span_fields[i]);
            return NULL;
        }
        slots[i] = ((PyMemberDescrObject *)descr)->d_member;
    }
    Py_INCREF(cls);
    Py_XSETREF(span_type, (PyTypeObject *)cls);
    for (int i = 0; i < 4; i++) span_slots[i] = slots[i];
    Py_RETURN_NONE;
}

/* Appends span_type(start, end, exp(min(lowest, 0.0)), count) to spans; -1 on error. */
static int add_span(PyObject *spans, Py_ssize_t start, Py_ssize_t end, double lowest, Py_ssize_t count) {
    PyObject *span = span_type->tp_alloc(span_type, 0);
    if (span == NULL) return -1;
    PyObject *values[4] = {PyLong_FromSsize_t(start), PyLong_FromSsize_t(end),
                           PyFloat_FromDouble(exp(lowest < 0.0 ? lowest : 0.0)), PyLong_FromSsize_t(count)};
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        failed = failed || values[i] == NULL || PyMember_SetOne((char *)span, span_slots[i], values[i]) < 0;
        Py_XDECREF(values[i]);
    }
    failed = failed || PyList_Append(spans, span) < 0;
    Py_DECREF(span);
    return failed ? -1 : 0;
}

static Py_ssize_t index_of(PyObject *low, Py_ssize_t at) {
    return PyLong_AsSsize_t(PyTuple_GET_ITEM(PyList_GET_ITEM(low, at), 0));
}

/* The spans of observability._score._spans, from the low-confidence tokens (index, logprob), when
 * every token's piece decodes on its own (then a token's range is the running length and ranges
 * only grow); None otherwise, or when use_span_type() was not called. NULL on error. */
static PyObject *build_spans(PyObject *entries, PyObject *low) {
    if (span_type == NULL) Py_RETURN_NONE;
    PyObject *spans = PyList_New(0);
    if (spans == NULL) return NULL;
    Py_ssize_t n_low = PyList_GET_SIZE(low), next = 0, length = 0;
    Py_ssize_t next_index = index_of(low, 0);
    Py_ssize_t run_start = 0, run_end = 0, run_count = 0, run_last = -2; /* the open run of low tokens */
    double lowest = 0.0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        Py_ssize_t piece = piece_length(PyList_GET_ITEM(entries, i));
        if (piece < 0) {
            Py_DECREF(spans);
            if (piece == -2) return NULL;
            Py_RETURN_NONE;
        }
        if (i == next_index) {
            double lp = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(PyList_GET_ITEM(low, next), 1));
            if (i == run_last + 1) {
                run_end = length + piece;
                run_count++;
                if (lp < lowest) lowest = lp;
            } else {
                if (run_count && add_span(spans, run_start, run_end, lowest, run_count) < 0) goto error;
                run_start = length;
                run_end = length + piece;
                run_count = 1;
                lowest = lp;
            }
            run_last = i;
            next++;
            next_index = next < n_low ? index_of(low, next) : -1;
        }
        length += piece;
    }
    if (run_count && add_span(spans, run_start, run_end, lowest, run_count) < 0) goto error;
    return spans;
error:
    Py_DECREF(spans);
    return NULL;
}

/* sum_chat_entries(entries, log_threshold, floor) -> (n, sum of logprobs, lowest logprob, the
 * entropy, negentropy, margin and mass sums with their counts, the low-confidence tokens as
 * (index, logprob), their spans or None) | None when an entry is not in the plain shape (see
 * observability._score.score_chat_entries). */
static PyObject *sum_chat_entries(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "sum_chat_entries(entries: list, log_threshold: float, floor: float)");
        return NULL;
    }
    PyObject *entries = args[0];
    double log_threshold = PyFloat_AsDouble(args[1]);
    if (log_threshold == -1.0 && PyErr_Occurred()) return NULL;
    double floor_ = PyFloat_AsDouble(args[2]);
    if (floor_ == -1.0 && PyErr_Occurred()) return NULL;

    Py_ssize_t n = 0, entropy_n = 0, negentropy_n = 0, margin_n = 0;
    double total = 0.0, min_lp = 0.0, entropy_sum = 0.0, negentropy_sum = 0.0, margin_sum = 0.0, mass_sum = 0.0;
    PyObject *low = PyList_New(0);
    if (low == NULL) return NULL;

    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!PyDict_CheckExact(entry)) goto plain_shape_ends;
        PyObject *value = get(entry, key_logprob);
        if (value == NULL) goto missing;
        if (!PyFloat_CheckExact(value)) goto plain_shape_ends;
        double lp = PyFloat_AS_DOUBLE(value);
        if (!(lp <= 0.0)) goto plain_shape_ends;
        total += lp > floor_ ? lp : floor_;
        if (lp < min_lp) min_lp = lp;
        if (lp < log_threshold) {
            PyObject *pair = Py_BuildValue("(nO)", n, value);
            if (pair == NULL || PyList_Append(low, pair) < 0) { Py_XDECREF(pair); goto error; }
            Py_DECREF(pair);
        }
        n++;
        PyObject *alternatives = get(entry, key_top_logprobs);
        if (alternatives == NULL) {
            if (PyErr_Occurred()) goto error;
            continue;
        }
        if (alternatives == Py_None) continue;
        if (!PyList_CheckExact(alternatives)) goto plain_shape_ends;
        Py_ssize_t size = PyList_GET_SIZE(alternatives);
        if (size == 0) continue;
        Py_ssize_t k = 0;
        double first = 0.0, second = 0.0, z = 0.0, weighted = 0.0, previous = 0.0;
        for (Py_ssize_t j = 0; j < size; j++) {
            PyObject *alternative = PyList_GET_ITEM(alternatives, j);
            if (!PyDict_CheckExact(alternative)) goto plain_shape_ends;
            PyObject *alp_value = get(alternative, key_logprob);
            if (alp_value == NULL) goto missing;
            if (!PyFloat_CheckExact(alp_value)) goto plain_shape_ends;
            double alp = PyFloat_AS_DOUBLE(alp_value);
            if (!(alp <= previous)) goto plain_shape_ends; /* also rules out NaN and > 0 */
            previous = alp;
            k++;
            double p = exp(alp);
            if (p > 0.0) {
                z += p;
                weighted += p * alp;
            }
            if (p > first) {
                second = first;
                first = p;
            } else if (p > second) {
                second = p;
            }
        }
        double entropy = z <= 0.0 ? 0.0 : log(z) - weighted / z;
        if (entropy < 0.0) entropy = 0.0;
        entropy_sum += entropy;
        entropy_n++;
        mass_sum += z > 1.0 ? 1.0 : z;
        if (k >= 2) {
            double negentropy = 1.0 - entropy / log((double)k);
            negentropy_sum += negentropy < 0.0 ? 0.0 : negentropy > 1.0 ? 1.0 : negentropy;
            negentropy_n++;
            margin_sum += first - second;
            margin_n++;
        }
    }
    PyObject *spans;
    if (PyList_GET_SIZE(low) == 0) {
        spans = PyList_New(0);
    } else {
        spans = build_spans(entries, low);
    }
    if (spans == NULL) goto error;
    return Py_BuildValue("(ndddndndndNN)", n, total, min_lp, entropy_sum, entropy_n, negentropy_sum, negentropy_n,
                         margin_sum, margin_n, mass_sum, low, spans);

missing: /* an entry or alternative without a logprob: malformed, like Python's KeyError */
    if (PyErr_Occurred()) goto error;
plain_shape_ends:
    Py_DECREF(low);
    Py_RETURN_NONE;
error:
    Py_DECREF(low);
    return NULL;
}

static PyMethodDef methods[] = {
    {"sum_chat_entries", (PyCFunction)(void (*)(void))sum_chat_entries, METH_FASTCALL,
     "sum_chat_entries(entries, log_threshold, floor) -> tuple | None\n\n"
     "The one-pass sums of observability._score.score_confidence over chat entries, and the spans."},
    {"use_span_type", use_span_type, METH_O, "use_span_type(cls): the LowConfidenceSpan class to build."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "observability._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    key_logprob = PyUnicode_InternFromString("logprob");
    key_top_logprobs = PyUnicode_InternFromString("top_logprobs");
    key_bytes = PyUnicode_InternFromString("bytes");
    key_token = PyUnicode_InternFromString("token");
    if (!key_logprob || !key_top_logprobs || !key_bytes || !key_token) return NULL;
    return PyModule_Create(&module);
}
