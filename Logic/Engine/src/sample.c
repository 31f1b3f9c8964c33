/* sample.c - training patches: foreground-biased position, padding, flips, zoom and rotation
 * (one affine resampling), contrast (gamma), intensity augmentation and channel dropout. The random numbers are drawn in a fixed order, so the
 * same generator state gives the same patch; each augmentation draws only when it is on. */
#include "internal.h"

#include <math.h>
#include <string.h>

cs_sampling_options cs_sampling_options_default(void)
{
    cs_sampling_options o;
    memset(&o, 0, sizeof o);
    o.foreground_fraction = 0.33f;
    o.flip_axes = 0;
    o.intensity_scale = 0.1f;
    o.intensity_shift = 0.1f;
    o.noise_std = 0.0f;
    o.zoom = 0.0f;
    o.gamma = 0.0f;
    return o;
}

static cs_status check_args(cs_context_t ctx, const cs_rng *rng, const float *image,
                            const int32_t *labels, int32_t channels, const int64_t size[3],
                            int32_t num_classes, const int32_t patch[3],
                            const cs_sampling_options *o, const float *patch_image,
                            const int32_t *patch_labels)
{
    if (!rng || !image || !labels || !size || !patch || !o || !patch_image || !patch_labels)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_sample_patch: a pointer argument is NULL");
    if (channels < 1 || channels > CS_MAX_CHANNELS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: channels is %d, must be in "
                       "[1, %d]",
                       (int)channels, CS_MAX_CHANNELS);
    if (num_classes < 2 || num_classes > CS_MAX_CLASSES)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: num_classes is %d, must be "
                       "in [2, %d]",
                       (int)num_classes, CS_MAX_CLASSES);
    int64_t voxels = 1, patch_voxels = 1;
    for (int i = 0; i < 3; i++) {
        if (size[i] < 1 || size[i] > (INT64_C(1) << 20))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_sample_patch: size[%d] is %lld", i,
                           (long long)size[i]);
        if (patch[i] < 1 || patch[i] > (1 << 20))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_sample_patch: patch[%d] is %d", i,
                           (int)patch[i]);
        voxels *= size[i];
        patch_voxels *= patch[i];
        if (voxels > (INT64_C(1) << 40) || patch_voxels > (INT64_C(1) << 40))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "cs_sample_patch: volume or patch too "
                           "large");
    }
    if (!(o->foreground_fraction >= 0 && o->foreground_fraction <= 1))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: foreground_fraction is %g, "
                       "must be in [0, 1]",
                       (double)o->foreground_fraction);
    if (o->flip_axes < 0 || o->flip_axes > 7)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: flip_axes is %d, must be a "
                       "mask of 1, 2, 4",
                       (int)o->flip_axes);
    if (!(o->intensity_scale >= 0 && o->intensity_scale < 1))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: intensity_scale is %g, "
                       "must be in [0, 1)",
                       (double)o->intensity_scale);
    if (!(o->intensity_shift >= 0 && isfinite(o->intensity_shift)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: intensity_shift is %g, "
                       "must be finite and >= 0",
                       (double)o->intensity_shift);
    if (!(o->noise_std >= 0 && isfinite(o->noise_std)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: noise_std is %g, must be "
                       "finite and >= 0",
                       (double)o->noise_std);
    if (!(o->zoom >= 0 && o->zoom < 1))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: zoom is %g, must be in "
                       "[0, 1)",
                       (double)o->zoom);
    for (int32_t k = 0; o->mirror_classes && k < num_classes; k++)
        if (o->mirror_classes[k] < 0 || o->mirror_classes[k] >= num_classes)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "cs_sample_patch: mirror_classes[%d] is "
                           "%d, must be in [0, %d)",
                           (int)k, (int)o->mirror_classes[k], (int)num_classes);
    if (!(o->gamma >= 0 && o->gamma <= 10))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: gamma is %g, must be in "
                       "[0, 10]",
                       (double)o->gamma);
    if (!(o->channel_dropout >= 0 && o->channel_dropout <= 1))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: channel_dropout is %g, must be in [0, 1]",
                       (double)o->channel_dropout);
    for (int i = 0; i < 3; i++)
        if (!(o->rotation[i] >= 0 && o->rotation[i] <= 180))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "cs_sample_patch: rotation[%d] is %g "
                           "degrees, must be in [0, 180]",
                           i, (double)o->rotation[i]);
    return CS_OK;
}

/* Picks a random voxel of a random foreground class present in labels (N); returns 0 when the
 * volume has no foreground, 1 with *voxel set. Two passes over the labels, no allocation. */
static int pick_foreground(cs_context_t ctx, cs_rng *rng, const int32_t *labels, int64_t n,
                           int32_t num_classes, int64_t *voxel, cs_status *st)
{
    int64_t counts[CS_MAX_CLASSES];
    memset(counts, 0, sizeof counts);
    for (int64_t i = 0; i < n; i++) {
        int32_t v = labels[i];
        if (v < 0 || v >= num_classes) {
            *st = cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                          "cs_sample_patch: label %d at voxel %lld "
                          "is outside [0, %d)",
                          (int)v, (long long)i, (int)num_classes);
            return 0;
        }
        counts[v]++;
    }
    int32_t present[CS_MAX_CLASSES], num_present = 0;
    for (int32_t k = 1; k < num_classes; k++)
        if (counts[k] > 0) present[num_present++] = k;
    if (num_present == 0) return 0;
    int32_t k = present[cs_rng_below(rng, num_present)];
    int64_t target = cs_rng_below(rng, counts[k]);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] == k && target-- == 0) {
            *voxel = i;
            return 1;
        }
    return 0; /* not reached: counts[k] voxels of class k exist */
}

/* The patch starts along one axis that keep the patch inside the volume or, when the volume
 * is smaller than the patch, the volume inside the patch: [lo, hi]. */
static void start_range(int64_t n, int64_t p, int64_t *lo, int64_t *hi)
{
    *lo = n >= p ? 0 : n - p;
    *hi = n >= p ? n - p : 0;
}

/* The volume a patch is cut from, with each channel's padding value. */
typedef struct cs_volume_view {
    const float *image;    /* (C, nz, ny, nx) */
    const int32_t *labels; /* (nz, ny, nx) */
    int32_t channels;
    int64_t size[3]; /* nx, ny, nz */
    int32_t num_classes;
    const float *pad_value; /* per channel */
} cs_volume_view;

/* Destination index of patch voxel (x, y, z) with flips. */
static int64_t flipped_index(const int64_t p[3], const int flip[3], int64_t x, int64_t y, int64_t z)
{
    const int64_t dx = flip[0] ? p[0] - 1 - x : x, dy = flip[1] ? p[1] - 1 - y : y;
    const int64_t dz = flip[2] ? p[2] - 1 - z : z;
    return (dz * p[1] + dy) * p[0] + dx;
}

/* Copies the region at start (size p) voxel for voxel, padding outside the volume. Returns the
 * index of a label out of range, or -1. */
static int64_t copy_region(const cs_volume_view *v, const int64_t start[3], const int64_t p[3],
                           const int flip[3], float *patch_image, int32_t *patch_labels)
{
    const int64_t nx = v->size[0], ny = v->size[1], nz = v->size[2], n = nx * ny * nz;
    const int64_t pn = p[0] * p[1] * p[2];
    for (int64_t z = 0; z < p[2]; z++) {
        const int64_t sz = start[2] + z;
        for (int64_t y = 0; y < p[1]; y++) {
            const int64_t sy = start[1] + y;
            const int inside_zy = sz >= 0 && sz < nz && sy >= 0 && sy < ny;
            for (int64_t x = 0; x < p[0]; x++) {
                const int64_t sx = start[0] + x, d = flipped_index(p, flip, x, y, z);
                if (inside_zy && sx >= 0 && sx < nx) {
                    const int64_t s = (sz * ny + sy) * nx + sx;
                    const int32_t label = v->labels[s];
                    if (label < 0 || label >= v->num_classes) return s;
                    patch_labels[d] = label;
                    for (int32_t c = 0; c < v->channels; c++)
                        patch_image[c * pn + d] = v->image[c * n + s];
                } else {
                    patch_labels[d] = 0;
                    for (int32_t c = 0; c < v->channels; c++)
                        patch_image[c * pn + d] = v->pad_value[c];
                }
            }
        }
    }
    return -1;
}

/* Image value of channel c at integer (x, y, z), or the padding value outside the volume. */
static float voxel_or_pad(const cs_volume_view *v, int32_t c, int64_t x, int64_t y, int64_t z)
{
    const int64_t nx = v->size[0], ny = v->size[1], nz = v->size[2];
    if (x < 0 || x >= nx || y < 0 || y >= ny || z < 0 || z >= nz) return v->pad_value[c];
    return v->image[((c * nz + z) * ny + y) * nx + x];
}

/* Like copy_region, but patch voxel d shows the volume at centre + m (d - patch centre): the
 * region zoomed and rotated around the same centre; trilinear interpolation of the image,
 * nearest label. */
static int64_t copy_resampled(const cs_volume_view *v, const int64_t start[3], const int64_t p[3],
                              const int flip[3], const double m[3][3], float *patch_image,
                              int32_t *patch_labels)
{
    const int64_t nx = v->size[0], ny = v->size[1], nz = v->size[2];
    const int64_t pn = p[0] * p[1] * p[2];
    double centre[3];
    for (int i = 0; i < 3; i++) centre[i] = (double)start[i] + 0.5 * (double)(p[i] - 1);
    for (int64_t z = 0; z < p[2]; z++)
        for (int64_t y = 0; y < p[1]; y++)
            for (int64_t x = 0; x < p[0]; x++) {
                const double o[3] = {(double)x - 0.5 * (double)(p[0] - 1),
                                     (double)y - 0.5 * (double)(p[1] - 1),
                                     (double)z - 0.5 * (double)(p[2] - 1)};
                double f[3];
                for (int i = 0; i < 3; i++)
                    f[i] = centre[i] + m[i][0] * o[0] + m[i][1] * o[1] + m[i][2] * o[2];
                const int64_t d = flipped_index(p, flip, x, y, z);
                const int64_t lx = (int64_t)floor(f[0] + 0.5), ly = (int64_t)floor(f[1] + 0.5),
                              lz = (int64_t)floor(f[2] + 0.5);
                if (lx >= 0 && lx < nx && ly >= 0 && ly < ny && lz >= 0 && lz < nz) {
                    const int64_t s = (lz * ny + ly) * nx + lx;
                    const int32_t label = v->labels[s];
                    if (label < 0 || label >= v->num_classes) return s;
                    patch_labels[d] = label;
                } else {
                    patch_labels[d] = 0;
                }
                const int64_t x0 = (int64_t)floor(f[0]), y0 = (int64_t)floor(f[1]),
                              z0 = (int64_t)floor(f[2]);
                const double wx = f[0] - (double)x0, wy = f[1] - (double)y0, wz = f[2] - (double)z0;
                for (int32_t c = 0; c < v->channels; c++) {
                    double sum = 0.0;
                    for (int k = 0; k < 8; k++) {
                        const int ox = k & 1, oy = k >> 1 & 1, oz = k >> 2;
                        const double w = (ox ? wx : 1.0 - wx) * (oy ? wy : 1.0 - wy) *
                                         (oz ? wz : 1.0 - wz);
                        if (w != 0.0) sum += w * voxel_or_pad(v, c, x0 + ox, y0 + oy, z0 + oz);
                    }
                    patch_image[c * pn + d] = (float)sum;
                }
            }
    return -1;
}

/* out = a b (3x3) */
static void mat3_mul(const double a[3][3], const double b[3][3], double out[3][3])
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            out[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
}

/* zoom * Rz Ry Rx: rotations by U(-r, r) degrees about x, then y, then z; an angle is drawn only
 * when its axis' rotation is on (x and y stay off for 2D patches). Returns 0 for the identity. */
static int draw_transform(cs_rng *rng, const cs_sampling_options *o, int planar, double zoom,
                          double m[3][3])
{
    const double pi = 3.14159265358979323846;
    double c[3], s[3];
    int rotated = 0;
    for (int i = 0; i < 3; i++) {
        double a = 0.0;
        if (o->rotation[i] > 0 && !(planar && i < 2)) {
            a = (double)o->rotation[i] * pi / 180.0 * (2.0 * cs_rng_uniform(rng) - 1.0);
            rotated = 1;
        }
        c[i] = cos(a);
        s[i] = sin(a);
    }
    const double rx[3][3] = {{1, 0, 0}, {0, c[0], -s[0]}, {0, s[0], c[0]}};
    const double ry[3][3] = {{c[1], 0, s[1]}, {0, 1, 0}, {-s[1], 0, c[1]}};
    const double rz[3][3] = {{c[2], -s[2], 0}, {s[2], c[2], 0}, {0, 0, 1}};
    double yx[3][3], zyx[3][3];
    mat3_mul(ry, rx, yx);
    mat3_mul(rz, yx, zyx);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) m[i][j] = zoom * zyx[i][j];
    return rotated || zoom != 1.0;
}

/* v -> lo + (hi - lo) ((v - lo) / (hi - lo))^g over the values' range [lo, hi]. */
static void apply_gamma(float *values, int64_t count, float g)
{
    float lo = values[0], hi = values[0];
    for (int64_t i = 1; i < count; i++) {
        lo = values[i] < lo ? values[i] : lo;
        hi = values[i] > hi ? values[i] : hi;
    }
    if (!(hi > lo)) return; /* constant: nothing to reshape */
    const float range = hi - lo, inv = 1.0f / range;
    for (int64_t i = 0; i < count; i++) values[i] = lo + range * powf((values[i] - lo) * inv, g);
}

cs_status cs_sample_patch(cs_context_t ctx, cs_rng *rng, const float *image, const int32_t *labels,
                          int32_t channels, const int64_t size[3], int32_t num_classes,
                          const int32_t patch[3], const cs_sampling_options *options,
                          float *patch_image, int32_t *patch_labels)
{
    cs_status st = check_args(ctx, rng, image, labels, channels, size, num_classes, patch, options,
                              patch_image, patch_labels);
    if (st != CS_OK) return st;
    const int64_t nx = size[0], ny = size[1], nz = size[2];
    const int64_t px = patch[0], py = patch[1], pz = patch[2];
    const int64_t n = nx * ny * nz, pn = px * py * pz;
    const int64_t dims[3] = {nx, ny, nz}, pdims[3] = {px, py, pz};

    /* position: centred on a foreground voxel, or uniform over all placements */
    int64_t start[3];
    int64_t voxel = -1;
    if (cs_rng_uniform(rng) < options->foreground_fraction) {
        st = CS_OK;
        if (!pick_foreground(ctx, rng, labels, n, num_classes, &voxel, &st)) voxel = -1;
        if (st != CS_OK) return st;
    }
    const int64_t centre[3] = {voxel % nx, (voxel / nx) % ny, voxel / (nx * ny)};
    for (int i = 0; i < 3; i++) {
        int64_t lo, hi;
        start_range(dims[i], pdims[i], &lo, &hi);
        if (voxel >= 0) {
            int64_t s = centre[i] - pdims[i] / 2;
            start[i] = s < lo ? lo : s > hi ? hi : s;
        } else {
            start[i] = lo + cs_rng_below(rng, hi - lo + 1);
        }
    }
    int flip[3];
    for (int i = 0; i < 3; i++)
        flip[i] = (options->flip_axes >> i & 1) ? cs_rng_uniform(rng) < 0.5f : 0;
    const double zoom = options->zoom > 0 ? 1.0 + options->zoom * (2.0 * cs_rng_uniform(rng) - 1.0)
                                          : 1.0;
    double transform[3][3];
    const int resampled = draw_transform(rng, options, pz == 1, zoom, transform);

    /* the padding value of each channel is its minimum, needed only when the patch (or the
     * resampled region) leaves the volume */
    int pads = resampled;
    for (int i = 0; i < 3; i++) pads |= start[i] < 0 || start[i] + pdims[i] > dims[i];
    float pad_value[CS_MAX_CHANNELS];
    for (int32_t c = 0; c < channels && pads; c++) {
        const float *src = image + c * n;
        float m = src[0];
        for (int64_t i = 1; i < n; i++) m = src[i] < m ? src[i] : m;
        pad_value[c] = m;
    }

    const cs_volume_view vol = {image, labels, channels, {nx, ny, nz}, num_classes, pad_value};
    const int64_t bad = resampled
                            ? copy_resampled(&vol, start, pdims, flip, transform, patch_image,
                                             patch_labels)
                            : copy_region(&vol, start, pdims, flip, patch_image, patch_labels);
    if (bad >= 0)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_sample_patch: label %d at voxel %lld is "
                       "outside [0, %d)",
                       (int)labels[bad], (long long)bad, (int)num_classes);
    if (flip[0] && options->mirror_classes)
        for (int64_t i = 0; i < pn; i++) patch_labels[i] = options->mirror_classes[patch_labels[i]];

    /* contrast (gamma), then intensity augmentation per channel, then noise */
    for (int32_t c = 0; c < channels && options->gamma > 0; c++) {
        const double log_range = log(1.0 + (double)options->gamma);
        const double g = exp(log_range * (2.0 * cs_rng_uniform(rng) - 1.0));
        apply_gamma(patch_image + c * pn, pn, (float)g);
    }
    for (int32_t c = 0; c < channels; c++) {
        float scale = 1.0f, shift = 0.0f;
        if (options->intensity_scale > 0)
            scale = 1.0f + options->intensity_scale * (2.0f * cs_rng_uniform(rng) - 1.0f);
        if (options->intensity_shift > 0)
            shift = options->intensity_shift * (2.0f * cs_rng_uniform(rng) - 1.0f);
        if (scale != 1.0f || shift != 0.0f) {
            float *dst = patch_image + c * pn;
            for (int64_t i = 0; i < pn; i++) dst[i] = dst[i] * scale + shift;
        }
    }
    if (options->noise_std > 0) {
        for (int64_t i = 0; i < channels * pn; i++)
            patch_image[i] += options->noise_std * cs_rng_normal(rng);
    }
    if (channels > 1 && options->channel_dropout > 0 &&
        cs_rng_uniform(rng) < options->channel_dropout) {
        const int64_t c = cs_rng_below(rng, channels);
        memset(patch_image + c * pn, 0, (size_t)pn * sizeof(float));
    }
    return CS_OK;
}
