/* The auction algorithm with epsilon-scaling for batches of square assignment problems, compiled for the CPU.
 *
 * otkit.couplings.linear_assignment calls `solve` for CPU costs when this module is built (it is optional: without
 * a C compiler otkit installs without it and the torch auction of assignment.py serves the CPU too). One problem
 * after another, each in the Gauss-Seidel form: a stack of free rows, each popping row bidding for its best column
 * and the row it displaces bidding next.
 *
 * Row i's profit for column j is (lo - C_ij) - p_j (lo the problem's smallest cost, p the prices). A bid raises the
 * best column's price by (best profit - second best profit) + eps. Each row keeps a list of its CAND best columns
 * and `bound`, the profit of the next best when the list was made. Prices only rise (in every phase), so no column
 * off the list can be worth more than `bound`: while the list's best profit is at least `bound` it is the row's
 * best, and max(list's second, bound) bounds the second best from above (the bid may be smaller than the exact one
 * and still leaves the row eps-complementary). Otherwise the list is made again from the whole row.
 *
 * After a phase every row holds a column and satisfies eps-complementary slackness; the duality gap
 *     sum_i max_j profit_ij - sum_i profit_i,sigma(i)     (<= n eps)
 * bounds the assignment's excess cost over the optimum. The auction stops when the gap is at most tol n range(C);
 * otherwise eps is divided by THETA and the rows that violate the new eps release their columns and bid again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Measured on 1024 x 1024 squared distances of 2-D and 3072-D Gaussian batches (one CPU thread): lists of 4 or 8
 * columns were equally fast, 16 slower; a first eps of 1/50 of the cost range beat 1/8 and 1/1000; dividing eps by
 * 4, 8 or 16 between phases made no clear difference. */
#define CAND 8
#define START_EPS (1.0 / 50.0)
#define THETA 8.0
/* eps never goes below this fraction of the range, so that every bid moves a float64 price (linear_assignment
 * refuses tol below 1e-12, for which eps stops above the floor, and scales ranges far from 1 by a power of two) */
#define EPS_FLOOR 1e-13
/* cost entries solved between two looks at Python's signal handlers (2**20: a millisecond or so of work) */
#define SIGNAL_CHECK (1 << 20)

typedef struct {
    const double *cost; /* (n, n) row-major */
    int64_t n, k;       /* side, list length min(CAND, n - 1) */
    double lo;          /* the problem's smallest cost */
    double *price;      /* (n,) */
    int64_t *owner;     /* (n,) the row holding each column, -1 if none */
    int64_t *column;    /* (n,) the column each row holds, -1 if none */
    int64_t *listed;    /* (n, k) each row's listed columns; listed[i k] = -1: no list yet */
    double *worth;      /* (n, k) lo - C of the listed columns */
    double *bound;      /* (n,) the best profit off the list when it was made */
} Auction;

/* Row i's best profit; its column in *best and an upper bound of its second best profit in *second. */
static double best_profit(Auction *s, int64_t i, int64_t *best, double *second) {
    const int64_t n = s->n, k = s->k;
    int64_t *cols = s->listed + i * k;
    double *worth = s->worth + i * k;
    if (cols[0] >= 0) {
        double first = -INFINITY, next = -INFINITY;
        int64_t target = -1;
        for (int64_t t = 0; t < k; t++) {
            const double h = worth[t] - s->price[cols[t]];
            if (h > first) {
                next = first;
                first = h;
                target = cols[t];
            } else if (h > next) {
                next = h;
            }
        }
        if (first >= s->bound[i]) {
            *best = target;
            *second = next > s->bound[i] ? next : s->bound[i];
            return first;
        }
    }
    /* the list again: the k + 1 best profits of the row, in descending order */
    double top[CAND + 1];
    int64_t at[CAND + 1];
    int64_t size = 0;
    const double *row = s->cost + i * n;
    for (int64_t j = 0; j < n; j++) {
        const double h = (s->lo - row[j]) - s->price[j];
        if (size == k + 1 && h <= top[k]) continue;
        int64_t q = size < k + 1 ? size++ : k;
        while (q > 0 && top[q - 1] < h) {
            top[q] = top[q - 1];
            at[q] = at[q - 1];
            q--;
        }
        top[q] = h;
        at[q] = j;
    }
    for (int64_t t = 0; t < k; t++) {
        cols[t] = at[t];
        worth[t] = s->lo - row[at[t]];
    }
    s->bound[i] = top[k];
    *best = at[0];
    *second = top[1];
    return top[0];
}

/* Row i's slack: its best profit minus the profit of the column it holds (>= 0). */
static double slack(Auction *s, int64_t i) {
    int64_t best;
    double second;
    const int64_t held = s->column[i];
    const double own = (s->lo - s->cost[i * s->n + held]) - s->price[held];
    return best_profit(s, i, &best, &second) - own;
}

/* The assignment of one (n, n) problem, n >= 2, into out (n,); out is the stack of free rows until the end.
 * Returns 0, or -2 when the cost's range overflows float64 or is too small for eps (denormal). */
static int solve_problem(Auction *s, const double *cost, int64_t n, double tol, int64_t *out) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t e = 0; e < n * n; e++) {
        if (cost[e] < lo) lo = cost[e];
        if (cost[e] > hi) hi = cost[e];
    }
    const double range = hi - lo;
    if (isinf(range) || (range > 0 && range * EPS_FLOOR < DBL_MIN)) return -2;
    if (!(range > 0)) { /* every assignment is optimal */
        for (int64_t i = 0; i < n; i++) out[i] = i;
        return 0;
    }
    s->cost = cost;
    s->lo = lo;
    for (int64_t j = 0; j < n; j++) {
        s->price[j] = 0.0;
        s->owner[j] = -1;
        s->column[j] = -1;
        s->listed[j * s->k] = -1;
    }
    double eps = range * START_EPS;
    double eps_min = range * tol / THETA;
    if (eps_min < range * EPS_FLOOR) eps_min = range * EPS_FLOOR;
    int64_t *stack = out, free_rows = 0;
    for (int64_t i = n - 1; i >= 0; i--) stack[free_rows++] = i;
    for (;;) {
        while (free_rows) {
            const int64_t row = stack[--free_rows];
            int64_t target;
            double second;
            const double first = best_profit(s, row, &target, &second);
            s->price[target] += (first - second) + eps;
            const int64_t previous = s->owner[target];
            if (previous >= 0) {
                s->column[previous] = -1;
                stack[free_rows++] = previous;
            }
            s->owner[target] = row;
            s->column[row] = target;
        }
        double gap = 0.0;
        for (int64_t i = 0; i < n; i++) gap += slack(s, i);
        if (gap <= tol * (double)n * range || eps <= eps_min) break;
        eps /= THETA;
        if (eps < eps_min) eps = eps_min;
        for (int64_t i = 0; i < n; i++) {
            if (slack(s, i) > eps) {
                s->owner[s->column[i]] = -1;
                s->column[i] = -1;
                stack[free_rows++] = i;
            }
        }
    }
    for (int64_t i = 0; i < n; i++) out[i] = s->column[i];
    return 0;
}

/* All problems of a contiguous (groups, n, n) float64 buffer, called without the GIL (*released is the thread
 * state it was released from). Between problems, once every SIGNAL_CHECK cost entries solved, it takes the GIL back
 * to run Python's signal handlers, so that Ctrl-C stops a long batch. Returns 0, -1 when memory runs out, -2 for a
 * range that overflows float64 or leaves eps no room above 0, -3 when a signal handler raised (its exception set). */
static int solve_all(const double *cost, int64_t groups, int64_t n, double tol, int64_t *out,
                     PyThreadState **released) {
    if (n == 1) {
        for (int64_t g = 0; g < groups; g++) out[g] = 0;
        return 0;
    }
    Auction s;
    s.n = n;
    s.k = n - 1 < CAND ? n - 1 : CAND;
    s.price = malloc(sizeof(double) * (size_t)n);
    s.owner = malloc(sizeof(int64_t) * (size_t)n);
    s.column = malloc(sizeof(int64_t) * (size_t)n);
    s.listed = malloc(sizeof(int64_t) * (size_t)(n * s.k));
    s.worth = malloc(sizeof(double) * (size_t)(n * s.k));
    s.bound = malloc(sizeof(double) * (size_t)n);
    int status = 0;
    if (s.price && s.owner && s.column && s.listed && s.worth && s.bound) {
        int64_t since = 0;
        for (int64_t g = 0; g < groups && !status; g++) {
            status = solve_problem(&s, cost + g * n * n, n, tol, out + g * n);
            since += n * n;
            if (!status && since >= SIGNAL_CHECK && g + 1 < groups) {
                since = 0;
                PyEval_RestoreThread(*released);
                if (PyErr_CheckSignals()) status = -3;
                *released = PyEval_SaveThread();
            }
        }
    } else {
        status = -1;
    }
    free(s.price);
    free(s.owner);
    free(s.column);
    free(s.listed);
    free(s.worth);
    free(s.bound);
    return status;
}

static PyObject *solve(PyObject *self, PyObject *args) {
    unsigned long long cost_address, out_address;
    long long groups, n;
    double tol;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLdK", &cost_address, &groups, &n, &tol, &out_address)) return NULL;
    if (groups < 0 || n < 1 || !(tol > 0)) {
        PyErr_Format(PyExc_ValueError, "solve needs groups >= 0, n >= 1 and tol > 0, got %lld, %lld, %g", groups, n, tol);
        return NULL;
    }
    PyThreadState *released = PyEval_SaveThread();
    const int status = solve_all((const double *)(uintptr_t)cost_address, groups, n, tol,
                                 (int64_t *)(uintptr_t)out_address, &released);
    PyEval_RestoreThread(released);
    if (status == -3) return NULL;
    if (status == -1) return PyErr_NoMemory();
    if (status == -2) {
        PyErr_SetString(PyExc_OverflowError,
                        "a problem's cost range (max C - min C) overflows float64, or is too small for eps > 0");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"solve", solve, METH_VARARGS,
     "solve(cost_address, groups, n, tol, out_address): the auction on the contiguous float64 (groups, n, n) costs at "
     "cost_address, each row's column written to the int64 (groups, n) buffer at out_address, every problem within "
     "tol * n * range of its optimum."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_auction", "The compiled auction of otkit.couplings.linear_assignment (CPU).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__auction(void) { return PyModule_Create(&module); }
