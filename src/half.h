/*
 * half.h: bf16 and fp16 (IEEE binary16) <-> float and double conversions for host code, header-only.
 *
 * Every narrowing conversion rounds to nearest, ties to even, keeps the sign of zero, turns values past the
 * largest finite one into infinity and keeps NaN a NaN (quiet). fp16 subnormals are produced and read.
 * From double the conversion is correctly rounded too: double goes to float with round-to-odd first, which
 * leaves the later round-to-nearest-even exact (float keeps far more than two bits beyond bf16's and fp16's).
 * Bits travel as uint16_t, so no compiler half type is needed.
 */
#ifndef FM_HALF_H
#define FM_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t fm_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fm_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- bf16: the top 16 bits of a float ---- */

static inline float fm_bf16_to_f32(uint16_t h)
{
    return fm_bits_f32((uint32_t)h << 16);
}

static inline uint16_t fm_f32_to_bf16(float f)
{
    uint32_t u = fm_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the sign and the top payload bits, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* Adding 0x7fff plus the lowest kept bit rounds half to even; an overflow carries into the exponent and
     * gives infinity, as it should. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ---- fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits ---- */

static inline float fm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* inf or NaN */
        return fm_bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0u));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return fm_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t fm_f32_to_f16(float f)
{
    uint32_t u = fm_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds to infinity (65504 is the largest finite, 65520 the midpoint) */
        return (uint16_t)(sign | 0x7c00u);
    int32_t e = (int32_t)(a >> 23) - 127; /* unbiased exponent of the float */
    if (e < -25)                          /* below half the smallest subnormal (2^-25): zero */
        return sign;
    uint32_t man = (a & 0x7fffffu) | 0x800000u; /* 24-bit significand with the hidden bit */
    /* Shift that brings the significand to fp16's 11 bits (normal) or fewer (subnormal: exponent pinned at -14). */
    int shift = e >= -14 ? 13 : 13 + (-14 - e);
    uint32_t kept = man >> shift, rest = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u)))
        kept++;
    if (e >= -14) {
        /* kept holds 1.m in 11 bits; a carry to 12 bits bumps the exponent (the field arithmetic does it). */
        return (uint16_t)(sign | ((uint32_t)(e + 15) << 10)) + (uint16_t)(kept - 0x400u);
    }
    /* Subnormal: kept is the mantissa field; a carry into bit 10 yields the smallest normal, correctly. */
    return (uint16_t)(sign | kept);
}

/* ---- from double, correctly rounded ---- */

/* double -> float rounded to odd: truncate toward zero, then set the last bit when anything was dropped. */
static inline float fm_f64_to_f32_odd(double d)
{
    float f = (float)d;
    if (d != d || (double)f == d || f - f != 0.0f) /* NaN, exact, or overflowed to infinity */
        return f;
    uint32_t u = fm_f32_bits(f);
    if ((d > 0) == ((double)f > d)) /* rounded away from zero: step back toward zero */
        u -= 1u;
    return fm_bits_f32(u | 1u);
}

static inline uint16_t fm_f64_to_bf16(double d)
{
    return fm_f32_to_bf16(fm_f64_to_f32_odd(d));
}
static inline uint16_t fm_f64_to_f16(double d)
{
    return fm_f32_to_f16(fm_f64_to_f32_odd(d));
}

#endif /* FM_HALF_H */
