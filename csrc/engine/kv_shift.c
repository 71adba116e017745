// kv_shift.c — context shift: a sequence drops `discard` positions after its first `keep`
// and the later ones move down, as llama.cpp's server and CLI do when the context is full.
//
// The cache holds k already rotated for its position, so a cell that moves from p to
// p - discard is rotated once more by the angle of position -discard (rotations compose;
// every rope variant's angle is linear in the position). The magnitude factor is applied
// again, as llama.cpp's shift does (1 for every rope but YaRN's). v moves unchanged.
#include "lp.h"

enum { SHIFT_MAX_HEAD_DIM = 1024 };  // one head's k in floats, on the stack

// Moves one (layer, kv head)'s cells [from, end) down by `discard`, rotating k.
static void shift_head(const lp_kv *kv, uint16_t *kc, uint16_t *vc, int from, int end, int discard, int n_rot,
                       const lp_rope_cfg *rope, float *row) {
    const int hd = kv->head_dim;
    const int32_t delta = -discard;
    for (int p = from; p < end; p++) {  // increasing p: each target lies below every source still to read
        for (int d = 0; d < hd; d++) row[d] = lp_half_to_float(kc[lp_kv_index(hd, d, p)]);
        lp_rope_apply(row, 1, &delta, 1, hd, n_rot, rope);
        lp_kv_put(kc, hd, p - discard, row);
        for (int d = 0; d < hd; d++) vc[lp_kv_index(hd, d, p - discard)] = vc[lp_kv_index(hd, d, p)];
    }
}

int lp_kv_shift(const lp_weights *w, lp_kv *kv, int seq, int keep, int discard) {
    if (seq < 0 || seq >= kv->n_seq) return LP_ESEQ;
    const int len = kv->len[seq];
    if (keep < 0 || discard < 0 || (int64_t)keep + discard > len) return LP_EPOS;
    if (w->n_layer != kv->n_layer || w->n_head_kv != kv->n_head_kv || w->head_dim != kv->head_dim ||
        kv->head_dim > SHIFT_MAX_HEAD_DIM || w->n_rot > w->head_dim)
        return LP_ESHAPE;
    if (discard == 0) return LP_OK;
    float row[SHIFT_MAX_HEAD_DIM];
    for (int l = 0; l < kv->n_layer; l++) {
        const lp_rope_cfg rope = lp_rope_of(w, kv, l);
        for (int h = 0; h < kv->n_head_kv; h++)
            shift_head(kv, lp_kv_head(kv, kv->k, seq, l, h), lp_kv_head(kv, kv->v, seq, l, h), keep + discard, len,
                       discard, w->n_rot, &rope, row);
    }
    kv->len[seq] = len - discard;
    return LP_OK;
}
