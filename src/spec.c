/*
 * spec.c: the YAML spec language (specs/README.md). Two stages:
 *   1. libyaml's event parser builds a small tree of scalars, sequences and mappings, each node carrying its
 *      1-based line:column, so that every later error can point at the text (aliases share the anchored node;
 *      duplicate keys are errors);
 *   2. the compiler reads the top-level keys (version, seqlen/seqlen_q/seqlen_k, mask | heads | batch) and hands
 *      each mask node to its family (masks/registry.c), then stacks the per-(batch row, head) masks into
 *      [batch_m, heads_m, seq_len_k, 4].
 * The helpers that families use to read parameters (fm_spec_int, fm_spec_check_keys, ...) live here too.
 */
#include "spec.h"

#include "../masks/families.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 128          /* YAML nesting: deeper input is rejected rather than recursed into */
#define MAX_MASKS_COMPILED 100000 /* guards against alias bombs that would compile one node exponentially often */

/* ---- the tree --------------------------------------------------------------------------------------------- */

typedef struct anchor {
    char *name;
    fm_node *node;
} anchor;

typedef struct tree {
    void **blocks; /* every allocation of the tree, freed together */
    size_t n_blocks, cap_blocks;
    anchor *anchors;
    size_t n_anchors, cap_anchors;
} tree;

static void *tree_alloc(fm_compiler *cc, tree *t, size_t size)
{
    if (t->n_blocks == t->cap_blocks) {
        size_t cap = t->cap_blocks ? 2 * t->cap_blocks : 64;
        void **b = realloc(t->blocks, cap * sizeof *b);
        if (!b) {
            fm_error(cc->ctx, FAMASK_STATUS_NO_MEMORY, "out of memory reading the spec");
            return NULL;
        }
        t->blocks = b;
        t->cap_blocks = cap;
    }
    void *p = fm_calloc(cc->ctx, 1, size);
    if (p)
        t->blocks[t->n_blocks++] = p;
    return p;
}

static void tree_free(tree *t)
{
    for (size_t k = 0; k < t->n_blocks; k++)
        free(t->blocks[k]);
    free(t->blocks);
    free(t->anchors);
}

static char *tree_strdup(fm_compiler *cc, tree *t, const char *s, size_t len)
{
    char *p = tree_alloc(cc, t, len + 1);
    if (p)
        memcpy(p, s, len);
    return p;
}

famask_status fm_spec_error(fm_compiler *cc, const fm_node *node, famask_status status, const char *fmt, ...)
{
    char msg[FM_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (node)
        return fm_error(cc->ctx, status, "%s:%d:%d: %s", cc->name, node->line, node->col, msg);
    return fm_error(cc->ctx, status, "%s: %s", cc->name, msg);
}

static famask_status yaml_problem(fm_compiler *cc, const yaml_parser_t *p)
{
    const yaml_mark_t *m = &p->problem_mark;
    if (p->error == YAML_MEMORY_ERROR)
        return fm_error(cc->ctx, FAMASK_STATUS_NO_MEMORY, "%s: out of memory parsing the spec", cc->name);
    if (p->context)
        return fm_error(cc->ctx, FAMASK_STATUS_BAD_SPEC, "%s:%d:%d: invalid yaml: %s %s", cc->name,
                        (int)m->line + 1, (int)m->column + 1, p->problem ? p->problem : "syntax error", p->context);
    return fm_error(cc->ctx, FAMASK_STATUS_BAD_SPEC, "%s:%d:%d: invalid yaml: %s", cc->name, (int)m->line + 1,
                    (int)m->column + 1, p->problem ? p->problem : "syntax error");
}

static famask_status next_event(fm_compiler *cc, yaml_parser_t *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(p, ev))
        return yaml_problem(cc, p);
    return FAMASK_STATUS_OK;
}

static famask_status add_anchor(fm_compiler *cc, tree *t, const yaml_char_t *name, fm_node *node)
{
    if (!name)
        return FAMASK_STATUS_OK;
    if (t->n_anchors == t->cap_anchors) {
        size_t cap = t->cap_anchors ? 2 * t->cap_anchors : 8;
        anchor *a = realloc(t->anchors, cap * sizeof *a);
        if (!a)
            return fm_error(cc->ctx, FAMASK_STATUS_NO_MEMORY, "out of memory reading the spec");
        t->anchors = a;
        t->cap_anchors = cap;
    }
    char *copy = tree_strdup(cc, t, (const char *)name, strlen((const char *)name));
    if (!copy)
        return FAMASK_STATUS_NO_MEMORY;
    t->anchors[t->n_anchors].name = copy;
    t->anchors[t->n_anchors].node = node;
    t->n_anchors++;
    return FAMASK_STATUS_OK;
}

static famask_status parse_node(fm_compiler *cc, tree *t, yaml_parser_t *p, yaml_event_t *ev, int depth,
                                fm_node **out);

/* Reads the items of a sequence or mapping (the start event already consumed) until its end event. */
static famask_status parse_children(fm_compiler *cc, tree *t, yaml_parser_t *p, fm_node *node, int depth)
{
    yaml_event_type_t end = node->kind == FM_NODE_SEQ ? YAML_SEQUENCE_END_EVENT : YAML_MAPPING_END_EVENT;
    fm_node **kids = NULL;
    size_t n = 0, cap = 0;
    famask_status st = FAMASK_STATUS_OK;
    for (;;) {
        yaml_event_t ev;
        st = next_event(cc, p, &ev);
        if (st)
            goto fail;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            break;
        }
        fm_node *kid = NULL;
        st = parse_node(cc, t, p, &ev, depth + 1, &kid);
        yaml_event_delete(&ev);
        if (st)
            goto fail;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            fm_node **k2 = realloc(kids, cap * sizeof *k2);
            if (!k2) {
                st = fm_error(cc->ctx, FAMASK_STATUS_NO_MEMORY, "out of memory reading the spec");
                goto fail;
            }
            kids = k2;
        }
        kids[n++] = kid;
    }
    if (node->kind == FM_NODE_MAP) {
        for (size_t k = 0; k < n; k += 2) {
            if (kids[k]->kind != FM_NODE_SCALAR) {
                st = fm_spec_error(cc, kids[k], FAMASK_STATUS_BAD_SPEC, "a key must be a plain name");
                goto fail;
            }
            for (size_t x = 0; x < k; x += 2)
                if (strcmp(kids[x]->value, kids[k]->value) == 0) {
                    st = fm_spec_error(cc, kids[k], FAMASK_STATUS_BAD_SPEC,
                                       "duplicate key '%s' (first given at line %d): give each key once",
                                       kids[k]->value, kids[x]->line);
                    goto fail;
                }
        }
    }
    node->n = (int)(node->kind == FM_NODE_MAP ? n / 2 : n);
    node->kids = tree_alloc(cc, t, (n ? n : 1) * sizeof *kids);
    if (!node->kids) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    if (n)
        memcpy(node->kids, kids, n * sizeof *kids);
fail:
    free(kids);
    return st;
}

static famask_status parse_node(fm_compiler *cc, tree *t, yaml_parser_t *p, yaml_event_t *ev, int depth,
                                fm_node **out)
{
    famask_status st = FAMASK_STATUS_OK;
    if (ev->type == YAML_ALIAS_EVENT) {
        for (size_t k = t->n_anchors; k-- > 0;)
            if (strcmp(t->anchors[k].name, (const char *)ev->data.alias.anchor) == 0) {
                *out = t->anchors[k].node;
                return FAMASK_STATUS_OK;
            }
        return fm_error(cc->ctx, FAMASK_STATUS_BAD_SPEC, "%s:%d:%d: unknown alias '*%s'", cc->name,
                        (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                        (const char *)ev->data.alias.anchor);
    }
    fm_node *node = tree_alloc(cc, t, sizeof *node);
    if (!node)
        return FAMASK_STATUS_NO_MEMORY;
    node->line = (int)ev->start_mark.line + 1;
    node->col = (int)ev->start_mark.column + 1;
    if (depth > MAX_DEPTH)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "the spec nests deeper than %d levels", MAX_DEPTH);
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        node->kind = FM_NODE_SCALAR;
        node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        node->value = tree_strdup(cc, t, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        if (!node->value)
            return FAMASK_STATUS_NO_MEMORY;
        st = add_anchor(cc, t, ev->data.scalar.anchor, node);
        break;
    case YAML_SEQUENCE_START_EVENT:
        node->kind = FM_NODE_SEQ;
        st = parse_children(cc, t, p, node, depth);
        if (!st) /* anchored after its children: a node cannot contain an alias of itself */
            st = add_anchor(cc, t, ev->data.sequence_start.anchor, node);
        break;
    case YAML_MAPPING_START_EVENT:
        node->kind = FM_NODE_MAP;
        st = parse_children(cc, t, p, node, depth);
        if (!st)
            st = add_anchor(cc, t, ev->data.mapping_start.anchor, node);
        break;
    default:
        st = fm_spec_error(cc, node, FAMASK_STATUS_INTERNAL, "unexpected yaml event %d", (int)ev->type);
    }
    if (!st)
        *out = node;
    return st;
}

/* The root node of a one-document YAML text (NULL root for an empty document). */
static famask_status parse_tree(fm_compiler *cc, tree *t, const char *yaml, size_t len, fm_node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int have_event = 0;
    famask_status st = FAMASK_STATUS_OK;
    *root = NULL;
    if (!yaml_parser_initialize(&p))
        return fm_error(cc->ctx, FAMASK_STATUS_NO_MEMORY, "out of memory starting the yaml parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
    int docs = 0;
    for (;;) {
        st = next_event(cc, &p, &ev);
        if (st)
            break;
        have_event = 1;
        if (ev.type == YAML_STREAM_END_EVENT)
            break;
        if (ev.type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            st = fm_error(cc->ctx, FAMASK_STATUS_BAD_SPEC,
                          "%s:%d:%d: a second yaml document: a spec file holds exactly one", cc->name,
                          (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1);
            break;
        }
        if (ev.type == YAML_SCALAR_EVENT || ev.type == YAML_SEQUENCE_START_EVENT ||
            ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_ALIAS_EVENT) {
            st = parse_node(cc, t, &p, &ev, 0, root);
            if (st)
                break;
        }
        yaml_event_delete(&ev);
        have_event = 0;
    }
    if (have_event)
        yaml_event_delete(&ev);
    yaml_parser_delete(&p);
    return st;
}

/* ---- helpers for reading parameters ----------------------------------------------------------------------- */

const fm_node *fm_spec_get(const fm_node *map, const char *key)
{
    if (!map || map->kind != FM_NODE_MAP)
        return NULL;
    for (int k = 0; k < map->n; k++)
        if (strcmp(map->kids[2 * k]->value, key) == 0)
            return map->kids[2 * k + 1];
    return NULL;
}

const fm_node *fm_spec_key(const fm_node *map, const char *key)
{
    if (!map || map->kind != FM_NODE_MAP)
        return NULL;
    for (int k = 0; k < map->n; k++)
        if (strcmp(map->kids[2 * k]->value, key) == 0)
            return map->kids[2 * k];
    return NULL;
}

static int edit_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 64 || nb > 64)
        return 1000;
    int row[65];
    for (size_t y = 0; y <= nb; y++)
        row[y] = (int)y;
    for (size_t x = 1; x <= na; x++) {
        int diag = row[0];
        row[0] = (int)x;
        for (size_t y = 1; y <= nb; y++) {
            int up = row[y];
            int best = diag + (a[x - 1] != b[y - 1]);
            if (row[y - 1] + 1 < best)
                best = row[y - 1] + 1;
            if (up + 1 < best)
                best = up + 1;
            row[y] = best;
            diag = up;
        }
    }
    return row[nb];
}

const char *fm_spec_suggest(const char *word, const char *const *candidates)
{
    const char *best = NULL;
    int best_d = 1000, len = (int)strlen(word);
    for (int k = 0; candidates[k]; k++) {
        int d = edit_distance(word, candidates[k]);
        if (d < best_d) {
            best_d = d;
            best = candidates[k];
        }
    }
    int limit = len / 3 > 2 ? len / 3 : 2;
    return best && best_d <= limit && best_d < len ? best : NULL;
}

famask_status fm_spec_check_keys(fm_compiler *cc, const fm_node *map, const char *what, const char *const *allowed)
{
    for (int k = 0; map && k < map->n; k++) {
        const fm_node *key = map->kids[2 * k];
        int ok = 0;
        for (int a = 0; allowed[a] && !ok; a++)
            ok = strcmp(key->value, allowed[a]) == 0;
        if (ok)
            continue;
        const char *hint = fm_spec_suggest(key->value, allowed);
        if (hint)
            return fm_spec_error(cc, key, FAMASK_STATUS_BAD_SPEC, "unknown key '%s' in %s (did you mean '%s'?)",
                                 key->value, what, hint);
        char list[512];
        size_t used = 0;
        list[0] = '\0';
        for (int a = 0; allowed[a] && used + 64 < sizeof list; a++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", a ? ", " : "", allowed[a]);
        return fm_spec_error(cc, key, FAMASK_STATUS_BAD_SPEC, "unknown key '%s' in %s (known keys: %s)", key->value,
                             what, list);
    }
    return FAMASK_STATUS_OK;
}

famask_status fm_spec_require(fm_compiler *cc, const fm_node *map, const char *key, const char *what,
                              const fm_node **out)
{
    *out = fm_spec_get(map, key);
    if (*out)
        return FAMASK_STATUS_OK;
    return fm_spec_error(cc, map, FAMASK_STATUS_BAD_SPEC, "%s needs '%s'", what, key);
}

static const char *kind_name(fm_node_kind kind)
{
    return kind == FM_NODE_SEQ ? "a list" : kind == FM_NODE_MAP ? "a mapping" : "a value";
}

famask_status fm_spec_expect(fm_compiler *cc, const fm_node *node, fm_node_kind kind, const char *what)
{
    if (node->kind == kind)
        return FAMASK_STATUS_OK;
    return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "%s must be %s, not %s", what, kind_name(kind),
                         kind_name(node->kind));
}

famask_status fm_spec_int(fm_compiler *cc, const fm_node *node, const char *what, int64_t lo, int64_t hi,
                          int64_t *out)
{
    if (node->kind != FM_NODE_SCALAR)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' must be an integer, not %s", what,
                             kind_name(node->kind));
    const char *s = node->value;
    if (!*s)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' has no value: give an integer", what);
    if (!node->plain)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is the string \"%s\": write the integer "
                             "without quotes", what, s);
    const char *d = s + (*s == '-' || *s == '+');
    int digits = *d != '\0';
    for (const char *c = d; *c; c++)
        digits &= *c >= '0' && *c <= '9';
    if (!digits)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is '%s', but must be an integer", what, s);
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi) {
        if (*s == '-' && lo >= 0)
            return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is %s, but must be a non-negative integer",
                                 what, s);
        if (errno != ERANGE && v < lo)
            return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is %s, but must be at least %lld", what, s,
                                 (long long)lo);
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is %s, but must be at most %lld", what, s,
                             (long long)hi);
    }
    *out = v;
    return FAMASK_STATUS_OK;
}

famask_status fm_spec_double(fm_compiler *cc, const fm_node *node, const char *what, double lo, double hi,
                             double *out)
{
    if (node->kind != FM_NODE_SCALAR || !node->plain || !*node->value)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' must be a number", what);
    char *end = NULL;
    errno = 0;
    double v = strtod(node->value, &end);
    if (*end || errno || !isfinite(v))
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is '%s', but must be a number", what,
                             node->value);
    if (v < lo || v > hi)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is %s, but must be within %g..%g", what,
                             node->value, lo, hi);
    *out = v;
    return FAMASK_STATUS_OK;
}

famask_status fm_spec_bool(fm_compiler *cc, const fm_node *node, const char *what, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", NULL}, *const no[] = {"false", "False", "FALSE", NULL};
    if (node->kind == FM_NODE_SCALAR && node->plain)
        for (int k = 0; yes[k]; k++) {
            if (strcmp(node->value, yes[k]) == 0) {
                *out = 1;
                return FAMASK_STATUS_OK;
            }
            if (strcmp(node->value, no[k]) == 0) {
                *out = 0;
                return FAMASK_STATUS_OK;
            }
        }
    return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' must be true or false", what);
}

famask_status fm_spec_int_list(fm_compiler *cc, const fm_node *node, const char *what, int64_t lo, int64_t hi,
                               int **out, int *n)
{
    *out = NULL;
    *n = 0;
    famask_status st = FAMASK_STATUS_OK;
    char item[96];
    snprintf(item, sizeof item, "'%s'", what);
    st = fm_spec_expect(cc, node, FM_NODE_SEQ, item);
    if (st)
        return st;
    int *v = fm_malloc(cc->ctx, (size_t)(node->n ? node->n : 1) * sizeof *v);
    if (!v)
        return FAMASK_STATUS_NO_MEMORY;
    for (int k = 0; k < node->n && !st; k++) {
        int64_t x = 0;
        snprintf(item, sizeof item, "%s[%d]", what, k);
        st = fm_spec_int(cc, node->kids[k], item, lo, hi, &x);
        v[k] = (int)x;
    }
    if (st) {
        free(v);
        return st;
    }
    *out = v;
    *n = node->n;
    return FAMASK_STATUS_OK;
}

/* ---- the compiler ----------------------------------------------------------------------------------------- */

static const char *const *family_names(void)
{
    static const char *names[64];
    int k = 0;
    for (const fm_family *f = fm_families; f->name && k < 63; f++)
        names[k++] = f->name;
    names[k] = NULL;
    return names;
}

static famask_status unknown_type(fm_compiler *cc, const fm_node *node)
{
    const char *hint = fm_spec_suggest(node->value, family_names());
    if (hint)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "unknown mask type '%s' (did you mean '%s'?)",
                             node->value, hint);
    return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                         "unknown mask type '%s' (see specs/README.md for the list of types)", node->value);
}

famask_status fm_spec_compile_mask(fm_compiler *cc, const fm_node *node, int seq_len_q, int seq_len_k,
                                   famask_mask **out)
{
    *out = NULL;
    if (++cc->compiled > MAX_MASKS_COMPILED)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "the spec expands to more than %d masks",
                             MAX_MASKS_COMPILED);
    if (node->kind == FM_NODE_SCALAR && !*node->value)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                             "the mask is empty: write a type ('mask: causal') or a mapping with 'type:'");
    if (node->kind == FM_NODE_SCALAR) {
        const fm_family *f = fm_family_find(node->value);
        if (!f)
            return unknown_type(cc, node);
        if (!f->bare_ok)
            return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                                 "mask type '%s' needs parameters: write {type: %s, ...} (see specs/README.md)",
                                 f->name, f->name);
        return f->compile(cc, NULL, seq_len_q, seq_len_k, out);
    }
    if (node->kind != FM_NODE_MAP)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                             "a mask must be a type name or a mapping with 'type:', not a list");
    const fm_node *type = fm_spec_get(node, "type");
    if (!type) {
        /* The short form of a composition: {all_of: [...]} or {any_of: [...]}. */
        if (node->n == 1 && (fm_spec_get(node, "all_of") || fm_spec_get(node, "any_of")))
            return fm_family_find(node->kids[0]->value)->compile(cc, node, seq_len_q, seq_len_k, out);
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                             "a mask mapping needs 'type:' (for example {type: sliding_window, left: 128})");
    }
    if (type->kind != FM_NODE_SCALAR)
        return fm_spec_error(cc, type, FAMASK_STATUS_BAD_SPEC, "'type' must be a mask type name");
    const fm_family *f = fm_family_find(type->value);
    if (!f)
        return unknown_type(cc, type);
    return f->compile(cc, node, seq_len_q, seq_len_k, out);
}

/* The masks of the `heads` list of one entry, compiled; *n gets the count. */
static famask_status compile_heads(fm_compiler *cc, const fm_node *list, int nq, int nk, famask_mask ***out, int *n)
{
    static const char *const keys[] = {"mask", NULL};
    famask_mask **parts = NULL;
    famask_status st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'heads'");
    if (st)
        return st;
    if (list->n == 0)
        return fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "'heads' is empty: give one entry per head");
    parts = fm_calloc(cc->ctx, (size_t)list->n, sizeof *parts);
    if (!parts)
        return FAMASK_STATUS_NO_MEMORY;
    for (int h = 0; h < list->n && !st; h++) {
        const fm_node *e = list->kids[h], *m = NULL;
        st = fm_spec_expect(cc, e, FM_NODE_MAP, "a heads entry (write '- mask: ...')");
        if (!st)
            st = fm_spec_check_keys(cc, e, "a heads entry", keys);
        if (!st)
            st = fm_spec_require(cc, e, "mask", "a heads entry", &m);
        if (!st)
            st = fm_spec_compile_mask(cc, m, nq, nk, &parts[h]);
        if (!st && (parts[h]->batch_m != 1 || parts[h]->heads_m != 1))
            st = fm_spec_error(cc, m, FAMASK_STATUS_BAD_SPEC,
                               "this mask has %d batch rows and %d heads, but a heads entry takes a single mask",
                               parts[h]->batch_m, parts[h]->heads_m);
    }
    if (st) {
        for (int h = 0; h < list->n; h++)
            famask_mask_free(parts[h]);
        free(parts);
        return st;
    }
    *out = parts;
    *n = list->n;
    return FAMASK_STATUS_OK;
}

static famask_status compile_batch(fm_compiler *cc, const fm_node *list, int nq, int nk, famask_mask **out)
{
    static const char *const keys[] = {"mask", "heads", NULL};
    famask_status st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'batch'");
    if (st)
        return st;
    int nb = list->n, nh = 1, first = -1;
    if (nb == 0)
        return fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "'batch' is empty: give one entry per batch row");
    famask_mask ***rows = fm_calloc(cc->ctx, (size_t)nb, sizeof *rows);
    int *counts = fm_calloc(cc->ctx, (size_t)nb, sizeof *counts);
    const famask_mask **parts = NULL;
    if (!rows || !counts) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int b = 0; b < nb && !st; b++) {
        const fm_node *e = list->kids[b], *m = NULL, *h = NULL;
        st = fm_spec_expect(cc, e, FM_NODE_MAP, "a batch entry (write '- mask: ...' or '- heads: [...]')");
        if (!st)
            st = fm_spec_check_keys(cc, e, "a batch entry", keys);
        if (st)
            break;
        m = fm_spec_get(e, "mask");
        h = fm_spec_get(e, "heads");
        if (!m == !h) {
            st = fm_spec_error(cc, e, FAMASK_STATUS_BAD_SPEC, "a batch entry needs exactly one of 'mask' or 'heads'");
            break;
        }
        if (h) {
            st = compile_heads(cc, h, nq, nk, &rows[b], &counts[b]);
        } else {
            rows[b] = fm_calloc(cc->ctx, 1, sizeof **rows);
            if (!rows[b]) {
                st = FAMASK_STATUS_NO_MEMORY;
                break;
            }
            counts[b] = 1;
            st = fm_spec_compile_mask(cc, m, nq, nk, &rows[b][0]);
            if (!st && (rows[b][0]->batch_m != 1 || rows[b][0]->heads_m != 1))
                st = fm_spec_error(cc, m, FAMASK_STATUS_BAD_SPEC,
                                   "this mask has %d batch rows and %d heads, but a batch entry takes a single mask "
                                   "or a 'heads' list",
                                   rows[b][0]->batch_m, rows[b][0]->heads_m);
        }
        if (st)
            break;
        if (counts[b] > 1) {
            if (first >= 0 && counts[b] != nh) {
                st = fm_spec_error(cc, e, FAMASK_STATUS_BAD_SPEC,
                                   "batch entry %d gives %d heads, but entry %d gives %d: every entry needs the same "
                                   "number of heads (or one mask, which is shared by all heads)",
                                   b, counts[b], first, nh);
                break;
            }
            first = b;
            nh = counts[b];
        }
    }
    if (st)
        goto fail;
    parts = fm_calloc(cc->ctx, (size_t)nb * nh, sizeof *parts);
    if (!parts) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++)
            parts[b * nh + h] = rows[b][counts[b] == 1 ? 0 : h];
    st = famask_mask_stack(cc->ctx, parts, nb, nh, out);
fail:
    for (int b = 0; rows && b < nb; b++) {
        for (int h = 0; rows[b] && h < counts[b]; h++)
            famask_mask_free(rows[b][h]);
        free(rows[b]);
    }
    free(rows);
    free(counts);
    free(parts);
    return st;
}

static famask_status seq_len_value(fm_compiler *cc, const fm_node *node, const char *what, int *out)
{
    int64_t v = 0;
    famask_status st = fm_spec_int(cc, node, what, 1, FAMASK_MAX_SEQ_LEN, &v);
    *out = (int)v;
    return st;
}

static famask_status compile_tree(fm_compiler *cc, const fm_node *root, int seq_len, famask_mask **out)
{
    static const char *const keys[] = {"version", "seqlen", "seqlen_q", "seqlen_k", "mask", "batch", "heads", NULL};
    famask_status st = FAMASK_STATUS_OK;
    if (!root)
        return fm_error(cc->ctx, FAMASK_STATUS_BAD_SPEC, "%s:1:1: the spec is empty: give at least 'seqlen' and "
                        "'mask'", cc->name);
    if (root->kind != FM_NODE_MAP)
        return fm_spec_error(cc, root, FAMASK_STATUS_BAD_SPEC,
                             "a spec must be a mapping with 'seqlen' and 'mask' (or 'batch' or 'heads')");
    st = fm_spec_check_keys(cc, root, "the spec", keys);
    if (st)
        return st;
    const fm_node *n = fm_spec_get(root, "version");
    if (n) {
        int64_t version = 0;
        st = fm_spec_int(cc, n, "version", 0, INT32_MAX, &version);
        if (!st && version != 1)
            st = fm_spec_error(cc, n, FAMASK_STATUS_BAD_SPEC,
                               "spec version %lld is not supported: this famask reads version 1", (long long)version);
        if (st)
            return st;
    }
    const fm_node *sl = fm_spec_get(root, "seqlen"), *sq = fm_spec_get(root, "seqlen_q"),
                  *sk = fm_spec_get(root, "seqlen_k");
    int nq = 0, nk = 0;
    if (sl && (sq || sk))
        return fm_spec_error(cc, fm_spec_key(root, sq ? "seqlen_q" : "seqlen_k"), FAMASK_STATUS_BAD_SPEC,
                             "give either 'seqlen' or 'seqlen_q' and 'seqlen_k', not both");
    if (!sq != !sk)
        return fm_spec_error(cc, fm_spec_key(root, sq ? "seqlen_q" : "seqlen_k"), FAMASK_STATUS_BAD_SPEC,
                             "'%s' needs '%s' beside it (or give 'seqlen' for both)", sq ? "seqlen_q" : "seqlen_k",
                             sq ? "seqlen_k" : "seqlen_q");
    if (sl)
        st = seq_len_value(cc, sl, "seqlen", &nq);
    nk = nq;
    if (!st && sq)
        st = seq_len_value(cc, sq, "seqlen_q", &nq);
    if (!st && sk)
        st = seq_len_value(cc, sk, "seqlen_k", &nk);
    if (st)
        return st;
    if (seq_len > 0)
        nq = nk = seq_len;
    if (nq == 0)
        return fm_spec_error(cc, root, FAMASK_STATUS_BAD_SPEC,
                             "the spec gives no sequence length: add 'seqlen: N' (or 'seqlen_q' and 'seqlen_k')");
    const fm_node *mask = fm_spec_get(root, "mask"), *batch = fm_spec_get(root, "batch"),
                  *heads = fm_spec_get(root, "heads");
    if (!!mask + !!batch + !!heads != 1) {
        if (!mask && !batch && !heads)
            return fm_spec_error(cc, root, FAMASK_STATUS_BAD_SPEC, "the spec has no 'mask' (nor 'batch' or 'heads')");
        return fm_spec_error(cc, fm_spec_key(root, heads ? "heads" : "batch"), FAMASK_STATUS_BAD_SPEC,
                             "give only one of 'mask', 'batch' and 'heads' at the top level");
    }
    if (mask)
        return fm_spec_compile_mask(cc, mask, nq, nk, out);
    if (batch)
        return compile_batch(cc, batch, nq, nk, out);
    famask_mask **parts = NULL;
    int nh = 0;
    st = compile_heads(cc, heads, nq, nk, &parts, &nh);
    if (st)
        return st;
    st = famask_mask_stack(cc->ctx, (const famask_mask *const *)parts, 1, nh, out);
    for (int h = 0; h < nh; h++)
        famask_mask_free(parts[h]);
    free(parts);
    return st;
}

static famask_status compile(famask_ctx *ctx, const char *yaml, size_t len, const char *name, const char *dir,
                             int seq_len, famask_mask **out)
{
    fm_compiler cc = {ctx, name ? name : "<spec>", dir, 0, 0};
    tree t;
    memset(&t, 0, sizeof t);
    fm_node *root = NULL;
    if (seq_len < 0 || seq_len > FAMASK_MAX_SEQ_LEN)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "sequence length %d is outside 1..%d", seq_len,
                        FAMASK_MAX_SEQ_LEN);
    famask_status st = parse_tree(&cc, &t, yaml, len, &root);
    if (!st)
        st = compile_tree(&cc, root, seq_len, out);
    tree_free(&t);
    return st;
}

famask_status famask_mask_compile_string(famask_ctx *ctx, const char *yaml, size_t len, const char *name,
                                         int seq_len, famask_mask **out)
{
    *out = NULL;
    if (!yaml)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "spec text is NULL");
    return compile(ctx, yaml, len, name, "", seq_len, out);
}

famask_status famask_mask_compile_file(famask_ctx *ctx, const char *path, int seq_len, famask_mask **out)
{
    char *text = NULL, *dir = NULL;
    size_t len = 0, cap = 0;
    famask_status st = FAMASK_STATUS_OK;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fm_error(ctx, FAMASK_STATUS_CANNOT_OPEN, "cannot open '%s': %s", path, strerror(errno));
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            char *t2 = realloc(text, cap);
            if (!t2) {
                st = fm_error(ctx, FAMASK_STATUS_NO_MEMORY, "out of memory reading '%s'", path);
                goto fail;
            }
            text = t2;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        st = fm_error(ctx, FAMASK_STATUS_IO, "cannot read '%s': %s", path, strerror(errno));
        goto fail;
    }
    const char *slash = strrchr(path, '/');
    size_t nd = slash ? (size_t)(slash - path) + (slash == path) : 0;
    dir = fm_malloc(ctx, nd + 1);
    if (!dir) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    memcpy(dir, path, nd);
    dir[nd] = '\0';
    st = compile(ctx, text, len, path, dir, seq_len, out);
fail:
    fclose(f);
    free(text);
    free(dir);
    return st;
}
