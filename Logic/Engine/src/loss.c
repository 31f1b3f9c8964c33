/* loss.c - the Combo loss (docs/design.md, "The losses") and the other segmentation losses,
 * with exact gradients.
 *
 * Every loss is computed in two passes over the voxels:
 *   1. softmax per voxel (in double) and per-chunk partial sums: the voxel-wise term and, per
 *      class, sum_i -ln p_i,y (voxels of that class), sum_i p t (true positives), sum_i p and
 *      sum_i t;
 *   2. (when a gradient is asked for) softmax again, then dL/dlogits per voxel from the sums.
 * Chunks have a fixed size and their partials are added in chunk order, so the result is the
 * same bit for bit whatever the number of OpenMP threads.
 *
 * Loss of a batch (B items of N voxels, K classes):
 * - voxel-wise terms (Combo's cross-entropy, cross-entropy, focal) are means over all B*N voxels
 *   (Combo's over B*N*T terms: T = K - 1 one-vs-rest foreground terms, K for the paper's
 *   all-classes form and the Tversky form, 1 for the label-weighted form), which equals the mean
 *   of the items' losses;
 * - weighted cross-entropy is sum_i w_yi (-ln p_i,yi) / sum_i w_yi per item, then averaged over
 *   the items. With class_weights NULL, w_k = B*N / (K * c_k) where c_k counts the voxels of
 *   class k in the whole batch (classes absent from the batch get 0; they weigh no voxel);
 * - Dice-type terms (Combo's Dice, Dice, Tversky, focal Tversky) average classes 1..K-1 (or
 *   0..K-1 with dice_include_background), per item then averaged over items, or once over sums
 *   taken across the whole batch with batch_dice. Smoothing 1 in numerator and denominator.
 * - partial labels (labelled_classes): the probabilities of unlabelled classes are added to the
 *   background's before any term (chain rule: dL/dp_c = dL/dp_0 for such c); their own terms are
 *   left out and T, the Dice average, counts labelled classes only.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define CS_LOSS_CLIP 1e-7  /* Combo cross-entropy clip of p (docs/design.md) */
#define CS_LOSS_SMOOTH 1.0 /* Dice and Tversky smoothing */
#define CS_LOSS_CHUNK 4096 /* voxels per partial sum; fixed so sums ignore the thread count */
#define CS_LOSS_PARALLEL_MIN 32768 /* below this many voxels threads cost more than they save */

/* Per-chunk, per-item and per-group statistics: [vsum, ce[K], tp[K], sp[K], st[K]]. */
#define ST_VSUM 0
#define ST_CE(k, c) (1 + (c))
#define ST_TP(k, c) (1 + (k) + (c))
#define ST_SP(k, c) (1 + 2 * (k) + (c))
#define ST_ST(k, c) (1 + 3 * (k) + (c))
#define ST_SIZE(k) (1 + 4 * (size_t)(k))

static const char *const loss_names[] = {"combo",
                                         "cross_entropy",
                                         "weighted_cross_entropy",
                                         "dice",
                                         "focal",
                                         "tversky",
                                         "focal_tversky",
                                         "combo_all_classes",
                                         "combo_label_weighted",
                                         "combo_tversky"};
#define NUM_LOSS_KINDS ((int)(sizeof loss_names / sizeof loss_names[0]))

cs_loss_options cs_loss_options_default(void)
{
    cs_loss_options o;
    memset(&o, 0, sizeof o);
    /* the form whose beta steers misses against false alarms and whose background has its
     * own term (docs/loss-study.md) */
    o.kind = CS_LOSS_COMBO_TVERSKY;
    o.alpha = 0.5f;
    o.beta = 0.5f;
    o.gamma = 0.0f; /* the kind's default: 2 (focal), 0.75 (focal Tversky) */
    o.tversky_alpha = 0.3f;
    o.tversky_beta = 0.7f;
    o.dice_include_background = 0;
    o.batch_dice = 0;
    o.class_weights = NULL;
    o.labelled_classes = NULL;
    return o;
}

const char *cs_loss_kind_name(cs_loss_kind kind)
{
    if ((int)kind < 0 || (int)kind >= NUM_LOSS_KINDS) return "unknown";
    return loss_names[kind];
}

/* Case-insensitive, '-' and ' ' read as '_': "Focal-Tversky" names CS_LOSS_FOCAL_TVERSKY. */
cs_status cs_loss_kind_from_name(const char *name, cs_loss_kind *kind)
{
    if (!name || !kind) return CS_ERR_INVALID_ARGUMENT;
    const int i = cs_name_index(name, loss_names, NUM_LOSS_KINDS);
    if (i < 0) return CS_ERR_INVALID_ARGUMENT;
    *kind = (cs_loss_kind)i;
    return CS_OK;
}

static int in_unit_interval(float x) { return x >= 0.0f && x <= 1.0f; } /* false for NaN */

/* What one call computes, resolved from the options. */
typedef struct loss_plan {
    cs_loss_kind kind;
    int64_t batch, n;
    int32_t k;
    int32_t first_class; /* of Dice-type means: 0 or 1 */
    int batch_dice;
    double alpha, beta; /* Combo */
    double gamma;       /* focal, focal Tversky (default resolved) */
    double ta, tb;      /* Tversky FP and FN weights */
    int partial;        /* some classes are unlabelled: merged into background */
    uint8_t labelled[CS_MAX_CLASSES];
    double combo_terms; /* Combo: cross-entropy terms per voxel (labelled classes it sums) */
} loss_plan;

static int is_combo(cs_loss_kind kind)
{
    return kind == CS_LOSS_COMBO || kind == CS_LOSS_COMBO_ALL_CLASSES ||
           kind == CS_LOSS_COMBO_LABEL_WEIGHTED || kind == CS_LOSS_COMBO_TVERSKY;
}

/* Combo forms whose cross-entropy is -ln p_y weighted by the voxel's label. */
static int is_label_weighted(cs_loss_kind kind)
{
    return kind == CS_LOSS_COMBO_LABEL_WEIGHTED || kind == CS_LOSS_COMBO_TVERSKY;
}

/* Clipped -ln p_y from the unclipped value nlp. */
static double clipped_nlp(double py, double nlp)
{
    if (py < CS_LOSS_CLIP) return -log(CS_LOSS_CLIP);
    return py > 1.0 - CS_LOSS_CLIP ? -log(1.0 - CS_LOSS_CLIP) : nlp;
}

/* CS_LOSS_COMBO_LABEL_WEIGHTED and _TVERSKY: a voxel's cross-entropy weight by its label, beta for
 * foreground voxels (their misses), 1 - beta for background voxels (their false alarms). */
static double label_weight(int32_t y, const loss_plan *pl)
{
    return y > 0 ? pl->beta : 1.0 - pl->beta;
}

static int has_region_term(cs_loss_kind kind)
{
    return is_combo(kind) || kind == CS_LOSS_DICE || kind == CS_LOSS_TVERSKY ||
           kind == CS_LOSS_FOCAL_TVERSKY;
}

/* Voxels per softmax block: the exponentials of a block form one loop the compiler vectorises. */
#define SOFTMAX_BLOCK 16

/* e^x for x <= 0, in double, branch-free so that a loop of it vectorises (libm's exp is a call
 * per element: with 27 classes it was a fifth of a training step). x = k ln2 + r, |r| <= ln2/2;
 * e^r by its Taylor series to degree 12 (truncation below 2e-16 relative); 2^k built in the
 * exponent bits of t, whose low bits hold k after the shift by 1.5 * 2^52. Below -708 the
 * argument is clamped (e^-708 ~ 3e-308, nothing next to the clip of 1e-7); NaN stays NaN. */
static inline double exp_nonpositive(double x)
{
    const double shifter = 0x1.8p52, log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    x = x < -708.0 ? -708.0 : x;
    const double t = x * log2e + shifter;
    const double kf = t - shifter;
    const double r = (x - kf * ln2_hi) - kf * ln2_lo;
    double q = 1.0 / 479001600.0; /* 1/12! */
    q = q * r + 1.0 / 39916800.0;
    q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0;
    q = q * r + 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    q = q * r + 1.0;
    q = q * r + 1.0;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - UINT64_C(0x4338000000000000) + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return q * scale;
}

/* Softmax of m <= SOFTMAX_BLOCK consecutive voxels of logits z (K, N): p[c * SOFTMAX_BLOCK + j]
 * and lse[j] = ln sum_c exp(z_c) (log-sum-exp) for voxel j. */
CS_MULTIVERSION static void softmax_block(double *p, double *lse, const float *z, int64_t n,
                                          int32_t k, int m)
{
    double mx[SOFTMAX_BLOCK], s[SOFTMAX_BLOCK];
    for (int j = 0; j < m; j++) {
        mx[j] = z[j];
        s[j] = 0.0;
    }
    for (int32_t c = 1; c < k; c++)
        for (int j = 0; j < m; j++) {
            const double v = z[c * n + j];
            mx[j] = v > mx[j] ? v : mx[j];
        }
    for (int32_t c = 0; c < k; c++) {
        double *pc = p + c * SOFTMAX_BLOCK;
        for (int j = 0; j < m; j++) {
            pc[j] = exp_nonpositive((double)z[c * n + j] - mx[j]);
            s[j] += pc[j];
        }
    }
    for (int j = 0; j < m; j++) {
        lse[j] = mx[j] + log(s[j]);
        s[j] = 1.0 / s[j];
    }
    for (int32_t c = 0; c < k; c++)
        for (int j = 0; j < m; j++) p[c * SOFTMAX_BLOCK + j] *= s[j];
}

/* The softmax of voxel j of a block, as p (K). */
static void block_column(double *p, const double *block, int32_t k, int j)
{
    for (int32_t c = 0; c < k; c++) p[c] = block[c * SOFTMAX_BLOCK + j];
}

/* 1 - p_y as the sum of the other classes' p: exact where p_y is close to 1. */
static double one_minus_p_true(const double *p, int32_t y, int32_t k)
{
    double s = 0.0;
    for (int32_t c = 0; c < k; c++)
        if (c != y) s += p[c];
    return s;
}

/* Partial labels: p of the unlabelled classes moves into background's, theirs become 0. */
static void merge_unlabelled(double *p, const loss_plan *pl)
{
    for (int32_t c = 1; c < pl->k; c++)
        if (!pl->labelled[c]) {
            p[0] += p[c];
            p[c] = 0.0;
        }
}

static double clip_probability(double p)
{
    return p < CS_LOSS_CLIP ? CS_LOSS_CLIP : p > 1.0 - CS_LOSS_CLIP ? 1.0 - CS_LOSS_CLIP : p;
}

/* Combo's cross-entropy terms of one voxel with true class y (before the alpha / (N T)
 * scale): -beta ln p_y - (1 - beta) sum_c ln(1 - p_c) over the labelled classes c != y, from
 * class 1 (CS_LOSS_COMBO: one-vs-rest over the foreground; a background voxel has no beta term)
 * or from class 0 (CS_LOSS_COMBO_ALL_CLASSES). p is clipped to [1e-7, 1 - 1e-7]; ln p_y is -nlp
 * unless clipped. The ln(1 - p) terms are summed as the log of a product (one log per voxel
 * instead of K): as sum_c p_c <= 1, at most one factor is below 1/2 (and >= 1e-7) and the
 * others multiply to >= 1/4, so no underflow for any K. */
static double combo_voxel_terms(const double *p, int32_t y, double nlp, const loss_plan *pl)
{
    if (is_label_weighted(pl->kind)) return label_weight(y, pl) * clipped_nlp(p[y], nlp);
    const int32_t first = pl->kind == CS_LOSS_COMBO ? 1 : 0;
    double prod = 1.0;
    for (int32_t c = first; c < pl->k; c++)
        if (c != y && pl->labelled[c]) prod *= 1.0 - clip_probability(p[c]);
    double v = -(1.0 - pl->beta) * log(prod);
    if (y >= first) {
        const double py = p[y];
        v += pl->beta * clipped_nlp(py, nlp);
    }
    return v;
}

/* dL/dp_c of Combo's cross-entropy terms (scale: alpha / (N T)), added to g; zero where the
 * clip is active. */
static void combo_voxel_grad(double *g, const double *p, int32_t y, double scale,
                             const loss_plan *pl)
{
    if (is_label_weighted(pl->kind)) {
        if (p[y] >= CS_LOSS_CLIP && p[y] <= 1.0 - CS_LOSS_CLIP)
            g[y] -= scale * label_weight(y, pl) / p[y];
        return;
    }
    const int32_t first = pl->kind == CS_LOSS_COMBO ? 1 : 0;
    for (int32_t c = first; c < pl->k; c++)
        if (pl->labelled[c] && p[c] >= CS_LOSS_CLIP && p[c] <= 1.0 - CS_LOSS_CLIP)
            g[c] += c == y ? -scale * pl->beta / p[c] : scale * (1.0 - pl->beta) / (1.0 - p[c]);
}

/* Pass 1 over one chunk of one item: voxels [i0, i1) of logits z (K, N), labels y (N).
 * Returns 1 if a label is out of range or marks an unlabelled class. */
static int chunk_stats(double *st, const loss_plan *pl, const float *z, const int32_t *y,
                       int64_t i0, int64_t i1)
{
    const int32_t k = pl->k;
    const int64_t n = pl->n;
    double block[CS_MAX_CLASSES * SOFTMAX_BLOCK], block_lse[SOFTMAX_BLOCK], p[CS_MAX_CLASSES];
    memset(st, 0, ST_SIZE(k) * sizeof(double));
    for (int64_t b0 = i0; b0 < i1; b0 += SOFTMAX_BLOCK) {
        const int m = i1 - b0 < SOFTMAX_BLOCK ? (int)(i1 - b0) : SOFTMAX_BLOCK;
        softmax_block(block, block_lse, z + b0, n, k, m);
        for (int j = 0; j < m; j++) {
            const int64_t i = b0 + j;
            const int32_t yi = y[i];
            if (yi < 0 || yi >= k || !pl->labelled[yi]) return 1;
            block_column(p, block, k, j);
            const double lse = block_lse[j];
            double nlp = lse - (double)z[(int64_t)yi * n + i]; /* -ln p_y */
            if (pl->partial) {
                merge_unlabelled(p, pl);
                if (yi == 0) nlp = -log(p[0]);
            }
            switch (pl->kind) {
                case CS_LOSS_COMBO:
                case CS_LOSS_COMBO_ALL_CLASSES:
                case CS_LOSS_COMBO_LABEL_WEIGHTED:
                case CS_LOSS_COMBO_TVERSKY: st[ST_VSUM] += combo_voxel_terms(p, yi, nlp, pl); break;
                case CS_LOSS_CROSS_ENTROPY: st[ST_VSUM] += nlp; break;
                case CS_LOSS_FOCAL:
                    st[ST_VSUM] += pow(one_minus_p_true(p, yi, k), pl->gamma) * nlp;
                    break;
                default: break;
            }
            st[ST_CE(k, yi)] += nlp;
            st[ST_TP(k, yi)] += p[yi];
            st[ST_ST(k, yi)] += 1.0;
            for (int32_t c = 0; c < k; c++) st[ST_SP(k, c)] += p[c];
        }
    }
    return 0;
}

/* The Dice-type term of one group (an item, or the whole batch) from its sums: adds the loss
 * (times scale) to *loss and writes dL/dp_ic for voxels with t_ic = 1 (g1) and 0 (g0). */
static void region_term(double *loss, double *g1, double *g0, const double *st, const loss_plan *pl,
                        double scale)
{
    const int32_t k = pl->k;
    double nc = 0.0;
    for (int32_t c = pl->first_class; c < k; c++) nc += pl->labelled[c];
    for (int32_t c = 0; c < k; c++) g1[c] = g0[c] = 0.0;
    if (pl->kind == CS_LOSS_DICE || pl->kind == CS_LOSS_TVERSKY) *loss += scale;
    for (int32_t c = pl->first_class; c < k; c++) {
        if (!pl->labelled[c]) continue;
        const double tp = st[ST_TP(k, c)], sp = st[ST_SP(k, c)], sy = st[ST_ST(k, c)];
        if (pl->kind == CS_LOSS_COMBO_TVERSKY) {
            /* D = (2 tp + 1) / (2 (1 - beta) sp + 2 beta st + 1): Dice at beta 0.5, i.e.
             * 2 tp + 2 (1 - beta) fp + 2 beta fn + 1 below; beta > 0.5 weighs misses more */
            const double num = 2.0 * tp + CS_LOSS_SMOOTH;
            const double den = 2.0 * (1.0 - pl->beta) * sp + 2.0 * pl->beta * sy + CS_LOSS_SMOOTH;
            const double w = -(1.0 - pl->alpha) * scale / nc;
            *loss += w * num / den;
            g1[c] = w * (2.0 / den - 2.0 * (1.0 - pl->beta) * num / (den * den));
            g0[c] = w * (-2.0 * (1.0 - pl->beta) * num / (den * den));
        } else if (is_combo(pl->kind) || pl->kind == CS_LOSS_DICE) {
            /* D = (2 tp + 1) / (sp + st + 1) */
            const double num = 2.0 * tp + CS_LOSS_SMOOTH, den = sp + sy + CS_LOSS_SMOOTH;
            const double w = is_combo(pl->kind) ? -(1.0 - pl->alpha) * scale / nc : -scale / nc;
            *loss += w * num / den;
            g1[c] = w * (2.0 / den - num / (den * den));
            g0[c] = w * (-num / (den * den));
        } else {
            /* TI = (tp + 1) / (tp + a fp + b fn + 1), fp = sp - tp, fn = st - tp */
            const double num = tp + CS_LOSS_SMOOTH;
            const double den = tp + pl->ta * (sp - tp) + pl->tb * (sy - tp) + CS_LOSS_SMOOTH;
            const double ti = num / den;
            const double d1 = (den - num * (1.0 - pl->tb)) / (den * den); /* dTI/dp, t = 1 */
            const double d0 = -num * pl->ta / (den * den);                /* dTI/dp, t = 0 */
            double w;                                                     /* dL/dTI */
            if (pl->kind == CS_LOSS_TVERSKY) {
                *loss -= scale * ti / nc;
                w = -scale / nc;
            } else {
                const double base = 1.0 - ti > 0.0 ? 1.0 - ti : 0.0;
                *loss += scale * pow(base, pl->gamma) / nc;
                /* the derivative is unbounded at a perfect match (gamma < 1): take 0 there */
                w = base > 0.0 ? -scale * pl->gamma * pow(base, pl->gamma - 1.0) / nc : 0.0;
            }
            g1[c] = w * d1;
            g0[c] = w * d0;
        }
    }
}

/* Pass 2 over one chunk of one item: writes dL/dlogits gz (K, N) for voxels [i0, i1).
 * rg1, rg0: the item's group's Dice-type coefficients (NULL if none); wce_scale: w_y factor. */
static void chunk_grad(float *gz, const loss_plan *pl, const float *z, const int32_t *y, int64_t i0,
                       int64_t i1, const double *rg1, const double *rg0, const double *weights,
                       double wce_scale)
{
    const int32_t k = pl->k;
    const int64_t n = pl->n;
    const double inv_voxels = 1.0 / ((double)pl->batch * (double)n);
    const double combo_ce = pl->alpha * inv_voxels / pl->combo_terms;
    double block[CS_MAX_CLASSES * SOFTMAX_BLOCK], block_lse[SOFTMAX_BLOCK];
    double p[CS_MAX_CLASSES], q[CS_MAX_CLASSES], g[CS_MAX_CLASSES];
    for (int64_t b0 = i0; b0 < i1; b0 += SOFTMAX_BLOCK) {
        const int m = i1 - b0 < SOFTMAX_BLOCK ? (int)(i1 - b0) : SOFTMAX_BLOCK;
        softmax_block(block, block_lse, z + b0, n, k, m);
        for (int j = 0; j < m; j++) {
            const int64_t i = b0 + j;
            const int32_t yi = y[i];
            block_column(p, block, k, j);
            const double lse = block_lse[j];
            /* dL/dq of the (merged) probabilities q, dL/dp_c = dL/dq of the class c merges
             * into, then through the softmax: dz_c = p_c (g_c - sum_j p_j g_j) */
            int dp_terms = rg1 != NULL || is_combo(pl->kind);
            if (dp_terms) {
                for (int32_t c = 0; c < k; c++) q[c] = p[c];
                if (pl->partial) merge_unlabelled(q, pl);
                for (int32_t c = 0; c < k; c++) g[c] = rg1 ? (c == yi ? rg1[c] : rg0[c]) : 0.0;
                if (is_combo(pl->kind)) combo_voxel_grad(g, q, yi, combo_ce, pl);
                double dot = 0.0;
                for (int32_t c = 0; c < k; c++) {
                    if (!pl->labelled[c]) g[c] = g[0];
                    dot += p[c] * g[c];
                }
                for (int32_t c = 0; c < k; c++) g[c] = p[c] * (g[c] - dot);
            } else {
                for (int32_t c = 0; c < k; c++) g[c] = 0.0;
            }
            /* terms whose logit gradient is simplest written directly: f * (p - t) */
            double f = 0.0;
            switch (pl->kind) {
                case CS_LOSS_CROSS_ENTROPY: f = inv_voxels; break;
                case CS_LOSS_WEIGHTED_CROSS_ENTROPY: f = weights[yi] * wce_scale; break;
                case CS_LOSS_FOCAL: {
                    /* l = -(1-q)^g ln q; dl/dz_c = [(1-q)^g - g (1-q)^(g-1) q ln q] (p_c - t_c) */
                    const double omq = one_minus_p_true(p, yi, k);
                    const double lnq = (double)z[(int64_t)yi * n + i] - lse;
                    const double q = p[yi];
                    double d = pow(omq, pl->gamma);
                    if (omq > 0.0) d -= pl->gamma * pow(omq, pl->gamma - 1.0) * q * lnq;
                    f = d * inv_voxels;
                    break;
                }
                default: break;
            }
            if (f != 0.0)
                for (int32_t c = 0; c < k; c++) g[c] += f * (p[c] - (c == yi ? 1.0 : 0.0));
            for (int32_t c = 0; c < k; c++) gz[(int64_t)c * n + i] = (float)g[c];
        }
    }
}

/* Doubles of scratch: chunk partials, item sums, group sums, class weights, per-group g1, g0. */
static size_t scratch_doubles(int64_t b_count, int64_t n, int32_t k, int batch_dice)
{
    const int64_t chunks = (n + CS_LOSS_CHUNK - 1) / CS_LOSS_CHUNK * b_count;
    const int64_t groups = batch_dice ? 1 : b_count;
    const size_t ns = ST_SIZE(k);
    return (size_t)chunks * ns + (size_t)b_count * ns + (size_t)groups * ns + (size_t)k +
           2 * (size_t)groups * (size_t)k;
}

size_t cs_loss_scratch_size(int64_t batch, int64_t n, int32_t k, int batch_dice)
{
    if (batch < 1 || n < 1 || k < 1) return 0;
    return scratch_doubles(batch, n, k, batch_dice) * sizeof(double);
}

static cs_status loss_run(cs_context_t ctx, const loss_plan *pl, const float *class_weights,
                          const float *logits, const int32_t *labels, float *loss, float *grad,
                          void *scratch)
{
    const int32_t k = pl->k;
    const int64_t b_count = pl->batch, n = pl->n;
    const int64_t chunks_per_item = (n + CS_LOSS_CHUNK - 1) / CS_LOSS_CHUNK;
    const int64_t chunks = chunks_per_item * b_count;
    const int64_t groups = pl->batch_dice ? 1 : b_count;
    const size_t ns = ST_SIZE(k);
    const int parallel = b_count * n >= CS_LOSS_PARALLEL_MIN;

    const size_t doubles = scratch_doubles(b_count, n, k, pl->batch_dice);
    /* the caller's scratch (the trainer's, so that a step allocates nothing) or our own */
    double *own = scratch ? NULL : (double *)cs_alloc(ctx, doubles * sizeof(double), "loss sums");
    double *mem = scratch ? (double *)scratch : own;
    if (!mem) return CS_ERR_OUT_OF_MEMORY;
    if (scratch) memset(mem, 0, doubles * sizeof(double)); /* the sums below accumulate */
    double *chunk_st = mem;
    double *item_st = chunk_st + (size_t)chunks * ns;
    double *group_st = item_st + (size_t)b_count * ns;
    double *weights = group_st + (size_t)groups * ns;
    double *g1 = weights + k;
    double *g0 = g1 + (size_t)groups * k;

    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (parallel)
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t b = ch / chunks_per_item, i0 = (ch % chunks_per_item) * CS_LOSS_CHUNK;
        const int64_t i1 = i0 + CS_LOSS_CHUNK < n ? i0 + CS_LOSS_CHUNK : n;
        bad |= chunk_stats(chunk_st + (size_t)ch * ns, pl, logits + b * k * n, labels + b * n, i0,
                           i1);
    }
    if (bad) {
        cs_free(own);
        for (int64_t i = 0; i < b_count * n; i++) {
            if (labels[i] < 0 || labels[i] >= k)
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                               "loss: label %d at voxel %lld of batch item %lld is outside [0, %d)",
                               labels[i], (long long)(i % n), (long long)(i / n), k);
            if (!pl->labelled[labels[i]])
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                               "loss: label %d at voxel %lld of batch item %lld is a class marked "
                               "unlabelled",
                               labels[i], (long long)(i % n), (long long)(i / n));
        }
        return CS_ERR_INVALID_ARGUMENT;
    }
    /* fixed-order reductions: chunks into items, items into groups */
    for (int64_t b = 0; b < b_count; b++) {
        double *it = item_st + (size_t)b * ns;
        for (int64_t c = 0; c < chunks_per_item; c++) {
            const double *cs = chunk_st + (size_t)(b * chunks_per_item + c) * ns;
            for (size_t j = 0; j < ns; j++) it[j] += cs[j];
        }
        double *gr = group_st + (size_t)(pl->batch_dice ? 0 : b) * ns;
        for (size_t j = 0; j < ns; j++) gr[j] += it[j];
    }

    double total = 0.0;
    const double inv_voxels = 1.0 / ((double)b_count * (double)n);
    switch (pl->kind) {
        case CS_LOSS_COMBO:
        case CS_LOSS_COMBO_ALL_CLASSES:
        case CS_LOSS_COMBO_LABEL_WEIGHTED:
        case CS_LOSS_COMBO_TVERSKY:
            for (int64_t b = 0; b < b_count; b++) total += item_st[(size_t)b * ns + ST_VSUM];
            total *= pl->alpha * inv_voxels / pl->combo_terms;
            break;
        case CS_LOSS_CROSS_ENTROPY:
        case CS_LOSS_FOCAL:
            for (int64_t b = 0; b < b_count; b++) total += item_st[(size_t)b * ns + ST_VSUM];
            total *= inv_voxels;
            break;
        case CS_LOSS_WEIGHTED_CROSS_ENTROPY:
            for (int32_t c = 0; c < k; c++) {
                if (class_weights) {
                    weights[c] = class_weights[c];
                } else {
                    double count = 0.0;
                    for (int64_t b = 0; b < b_count; b++)
                        count += item_st[(size_t)b * ns + ST_ST(k, c)];
                    weights[c] = count > 0.0 ? (double)b_count * (double)n / ((double)k * count)
                                             : 0.0;
                }
            }
            for (int64_t b = 0; b < b_count; b++) {
                const double *it = item_st + (size_t)b * ns;
                double num = 0.0, den = 0.0;
                for (int32_t c = 0; c < k; c++) {
                    num += weights[c] * it[ST_CE(k, c)];
                    den += weights[c] * it[ST_ST(k, c)];
                }
                if (den > 0.0) total += num / den / (double)b_count; /* all-zero weights: 0 */
            }
            break;
        default: break;
    }
    if (has_region_term(pl->kind)) {
        const double scale = pl->batch_dice ? 1.0 : 1.0 / (double)b_count;
        for (int64_t g = 0; g < groups; g++)
            region_term(&total, g1 + g * k, g0 + g * k, group_st + (size_t)g * ns, pl, scale);
    }
    *loss = (float)total;

    if (grad) {
        const int region = has_region_term(pl->kind);
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t b = ch / chunks_per_item, i0 = (ch % chunks_per_item) * CS_LOSS_CHUNK;
            const int64_t i1 = i0 + CS_LOSS_CHUNK < n ? i0 + CS_LOSS_CHUNK : n;
            const int64_t g = pl->batch_dice ? 0 : b;
            double wce_scale = 0.0;
            if (pl->kind == CS_LOSS_WEIGHTED_CROSS_ENTROPY) {
                const double *it = item_st + (size_t)b * ns;
                double den = 0.0;
                for (int32_t c = 0; c < k; c++) den += weights[c] * it[ST_ST(k, c)];
                wce_scale = den > 0.0 ? 1.0 / (den * (double)b_count) : 0.0;
            }
            chunk_grad(grad + b * k * n, pl, logits + b * k * n, labels + b * n, i0, i1,
                       region ? g1 + g * k : NULL, region ? g0 + g * k : NULL, weights, wce_scale);
        }
    }
    cs_free(own);
    return CS_OK;
}

/* The labelled classes and the Combo cross-entropy's term count T: the labelled classes it
 * sums over (K - 1 for CS_LOSS_COMBO, K for the all-classes form, when all are labelled). */
static cs_status plan_labelled_classes(cs_context_t ctx, loss_plan *pl, const uint8_t *labelled)
{
    pl->partial = 0;
    for (int32_t c = 0; c < pl->k; c++) {
        pl->labelled[c] = labelled ? (labelled[c] != 0) : 1;
        pl->partial |= !pl->labelled[c];
    }
    if (!pl->labelled[0])
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "loss: the background (class 0) must be marked labelled");
    if (pl->partial && !has_region_term(pl->kind))
        return cs_fail(ctx, CS_ERR_UNSUPPORTED,
                       "loss: partial labels (unlabelled classes) need a Combo, Dice or Tversky "
                       "loss, not %s",
                       cs_loss_kind_name(pl->kind));
    double terms = 0.0;
    for (int32_t c = pl->kind == CS_LOSS_COMBO ? 1 : 0; c < pl->k; c++) terms += pl->labelled[c];
    /* the label-weighted form's one term per voxel is a mean over voxels; the Tversky form's
     * over the voxel x class terms, as the all-classes form, so that its scale against the Dice
     * term does not grow with K (over voxels only, 27 classes were left unlearnt: loss-study.md) */
    pl->combo_terms = terms > 0.0 && pl->kind != CS_LOSS_COMBO_LABEL_WEIGHTED ? terms : 1.0;
    return CS_OK;
}

cs_status cs_loss_run(cs_context_t ctx, const cs_loss_options *options, const float *logits,
                      const int32_t *labels, int64_t batch, int64_t n, int32_t k, float *loss,
                      float *grad, void *scratch)
{
    if (!options || !logits || !labels || !loss)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "loss: NULL options, logits, labels or loss");
    if (batch < 1 || n < 1 || k < 2 || k > CS_MAX_CLASSES)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "loss: batch %lld and voxels %lld must be positive, classes %d in [2, %d]",
                       (long long)batch, (long long)n, k, CS_MAX_CLASSES);
    if ((int)options->kind < 0 || (int)options->kind >= NUM_LOSS_KINDS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "loss: unknown kind %d", (int)options->kind);
    if (!in_unit_interval(options->alpha) || !in_unit_interval(options->beta) ||
        !in_unit_interval(options->tversky_alpha) || !in_unit_interval(options->tversky_beta))
        return cs_fail(
            ctx, CS_ERR_INVALID_ARGUMENT,
            "loss: alpha %g, beta %g, tversky_alpha %g, tversky_beta %g must be in [0, 1]",
            (double)options->alpha, (double)options->beta, (double)options->tversky_alpha,
            (double)options->tversky_beta);
    if (!(options->gamma >= 0.0f) || !isfinite(options->gamma))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "loss: gamma %g must be finite, not negative",
                       (double)options->gamma);
    if (options->kind == CS_LOSS_WEIGHTED_CROSS_ENTROPY && options->class_weights) {
        for (int32_t c = 0; c < k; c++)
            if (!(options->class_weights[c] >= 0.0f) || !isfinite(options->class_weights[c]))
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                               "loss: class weight %d = %g must be finite, not negative", c,
                               (double)options->class_weights[c]);
    }
    loss_plan pl;
    pl.kind = options->kind;
    pl.batch = batch;
    pl.n = n;
    pl.k = k;
    pl.first_class = options->dice_include_background ? 0 : 1;
    pl.batch_dice = options->batch_dice != 0;
    pl.alpha = options->alpha;
    pl.beta = options->beta;
    pl.gamma = options->gamma;
    if (pl.gamma == 0.0) {
        if (pl.kind == CS_LOSS_FOCAL) pl.gamma = 2.0;
        if (pl.kind == CS_LOSS_FOCAL_TVERSKY) pl.gamma = 0.75;
    }
    pl.ta = options->tversky_alpha;
    pl.tb = options->tversky_beta;
    cs_status st = plan_labelled_classes(ctx, &pl, options->labelled_classes);
    if (st != CS_OK) return st;
    return loss_run(ctx, &pl, options->class_weights, logits, labels, loss, grad, scratch);
}

cs_status cs_loss(const cs_loss_options *options, const float *logits, const int32_t *labels,
                  int64_t batch, int64_t n, int32_t k, float *loss, float *grad)
{
    return cs_loss_run(NULL, options, logits, labels, batch, n, k, loss, grad, NULL);
}

cs_status cs_combo_loss(const float *logits, const int32_t *labels, int64_t n, int32_t k,
                        float alpha, float beta, float *loss, float *grad)
{
    cs_loss_options o = cs_loss_options_default();
    o.kind = CS_LOSS_COMBO;
    o.alpha = alpha;
    o.beta = beta;
    return cs_loss(&o, logits, labels, 1, n, k, loss, grad);
}

void cs_dice_per_class(const int32_t *predicted, const int32_t *truth, int64_t n, int32_t k,
                       float *dice)
{
    if (!dice || k < 1) return;
    const float nan = (float)NAN;
    for (int32_t c = 0; c < k; c++) dice[c] = nan;
    if (!predicted || !truth || n < 1) return;
    /* counts of predicted, true and both, per class; labels outside [0, K) count nowhere. On
     * the stack for any model's class count: no allocation that could fail unreported. */
    int64_t stack[3 * CS_MAX_CLASSES];
    int64_t *counts = k <= CS_MAX_CLASSES
                          ? stack
                          : (int64_t *)cs_alloc(NULL, 3 * (size_t)k * sizeof(int64_t),
                                                "dice counts");
    if (!counts) return;
    if (counts == stack) memset(stack, 0, 3 * (size_t)k * sizeof(int64_t));
    int64_t *np = counts, *nt = counts + k, *both = counts + 2 * k;
    for (int64_t i = 0; i < n; i++) {
        const int32_t a = predicted[i], b = truth[i];
        const int a_ok = a >= 0 && a < k, b_ok = b >= 0 && b < k;
        if (a_ok) np[a]++;
        if (b_ok) nt[b]++;
        if (a_ok && a == b) both[a]++;
    }
    for (int32_t c = 0; c < k; c++)
        if (np[c] + nt[c] > 0) dice[c] = (float)(2.0 * (double)both[c] / (double)(np[c] + nt[c]));
    if (counts != stack) cs_free(counts);
}
