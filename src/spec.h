/*
 * spec.h: the spec tree (YAML nodes with 1-based source marks) and the helpers the mask families use to read
 * their parameters from it. Private to the library: src/spec.c builds the tree and compiles it; the files in masks/
 * read parameters through these helpers so that every error names file:line:col.
 */
#ifndef FAMASK_SPEC_H
#define FAMASK_SPEC_H

#include "internal.h"

typedef enum fm_node_kind { FM_NODE_SCALAR = 0, FM_NODE_SEQ = 1, FM_NODE_MAP = 2 } fm_node_kind;

typedef struct fm_node {
    fm_node_kind kind;
    int line, col;        /* 1-based, where the node starts */
    const char *value;    /* scalars: the text */
    int plain;            /* scalars: 1 if written without quotes (only plain scalars are numbers or booleans) */
    int n;                /* sequences: items; mappings: key/value pairs */
    struct fm_node **kids; /* sequences: n items; mappings: 2n nodes, key then value */
} fm_node;

/* What compiling one spec needs to know: where errors go and how to name positions. */
typedef struct fm_compiler {
    famask_ctx *ctx;
    const char *name; /* file name (or the caller's name for a string) used in messages */
    const char *dir;  /* the spec's folder, for relative `file:` paths ("" for the current one) */
    int depth;        /* nesting of compositions, bounded */
    int compiled;     /* mask nodes compiled so far, bounded (aliases can repeat a node many times) */
} fm_compiler;

/* Records "name:line:col: message" for node (or for the spec as a whole when node is NULL). */
famask_status fm_spec_error(fm_compiler *cc, const fm_node *node, famask_status status, const char *fmt, ...)
    FM_PRINTF(4, 5);

/* The value of key in a mapping, or NULL. */
const fm_node *fm_spec_get(const fm_node *map, const char *key);
/* The key node of key in a mapping (for error positions), or NULL. */
const fm_node *fm_spec_key(const fm_node *map, const char *key);
/* Fails naming the first key of map not in the NULL-terminated list (with a "did you mean"). */
famask_status fm_spec_check_keys(fm_compiler *cc, const fm_node *map, const char *what,
                                 const char *const *allowed);
/* The value of a required key, or an error at the mapping naming the key. */
famask_status fm_spec_require(fm_compiler *cc, const fm_node *map, const char *key, const char *what,
                              const fm_node **out);

/* A plain integer scalar in [lo, hi]. what names the quantity in messages ("left", "documents[2]"). */
famask_status fm_spec_int(fm_compiler *cc, const fm_node *node, const char *what, int64_t lo, int64_t hi,
                          int64_t *out);
/* A plain number in [lo, hi]. */
famask_status fm_spec_double(fm_compiler *cc, const fm_node *node, const char *what, double lo, double hi,
                             double *out);
/* true/false (also True/TRUE/False/FALSE). */
famask_status fm_spec_bool(fm_compiler *cc, const fm_node *node, const char *what, int *out);
/* A sequence of integers in [lo, hi]; *out is malloc'ed (free it), *n its length. */
famask_status fm_spec_int_list(fm_compiler *cc, const fm_node *node, const char *what, int64_t lo, int64_t hi,
                               int **out, int *n);
/* Checks node's kind, else "what must be a list / a mapping". */
famask_status fm_spec_expect(fm_compiler *cc, const fm_node *node, fm_node_kind kind, const char *what);

/* Compiles one mask node (a type name, a mapping with `type:`, or a composition) for seq_len_q x seq_len_k. */
famask_status fm_spec_compile_mask(fm_compiler *cc, const fm_node *node, int seq_len_q, int seq_len_k,
                                   famask_mask **out);

/* The closest candidate to word by edit distance, or NULL when none is close enough to suggest. */
const char *fm_spec_suggest(const char *word, const char *const *candidates);

#endif /* FAMASK_SPEC_H */
