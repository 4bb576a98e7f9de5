//! pgbench's built-in functions that are algorithms rather than arithmetic: the random
//! generators, the hashes and `permute`, transcribed from pgbench 15 so that the same seed and
//! arguments give the same values.

use super::prng::Prng;
use super::value::{fail, EvalError};

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const MM2_MUL: u64 = 0xc6a4_a793_5bd1_e995;
const MM2_MUL_TIMES_8: u64 = 0x3525_3c9a_de8f_4ca8;
const MM2_ROT: u32 = 47;

/// The smallest `random_gaussian` parameter.
pub const MIN_GAUSSIAN_PARAM: f64 = 2.0;
/// The `random_zipfian` parameter's range.
pub const MIN_ZIPFIAN_PARAM: f64 = 1.001;
/// See [`MIN_ZIPFIAN_PARAM`].
pub const MAX_ZIPFIAN_PARAM: f64 = 1000.0;

/// Checks a `random*(lb, ub, ...)` range as pgbench does: not empty, and `ub - lb + 1` fits.
pub fn check_range(min: i64, max: i64) -> Result<(), EvalError> {
    if min > max {
        return fail("empty range given to random");
    }
    if max
        .checked_sub(min)
        .and_then(|d| d.checked_add(1))
        .is_none()
    {
        return fail("random range is too large");
    }
    Ok(())
}

/// `random(lb, ub)`: uniform in `[lb, ub]`.
pub fn random(rng: &mut Prng, min: i64, max: i64) -> i64 {
    min.wrapping_add(rng.uint64_range(0, max.wrapping_sub(min) as u64) as i64)
}

/// `random_exponential(lb, ub, parameter)`: the density at `ub` is `exp(-parameter)` times the
/// density at `lb`.
pub fn random_exponential(rng: &mut Prng, min: i64, max: i64, parameter: f64) -> i64 {
    let cut = (-parameter).exp();
    let uniform = 1.0 - rng.double();
    let rand = -(cut + (1.0 - cut) * uniform).ln() / parameter;
    min + (((max - min + 1) as f64) * rand) as i64
}

/// `random_gaussian(lb, ub, parameter)`: a normal distribution centred on the middle of the
/// range, cut at `parameter` standard deviations either side.
pub fn random_gaussian(rng: &mut Prng, min: i64, max: i64, parameter: f64) -> i64 {
    let stdev = loop {
        let s = rng.double_normal();
        if s >= -parameter && s < parameter {
            break s;
        }
    };
    let rand = (stdev + parameter) / (parameter * 2.0);
    min + (((max - min + 1) as f64) * rand) as i64
}

/// `random_zipfian(lb, ub, s)`: `k` (1-based in the range) is drawn with probability
/// proportional to `1/k^s`, by Devroye's rejection method as pgbench computes it.
pub fn random_zipfian(rng: &mut Prng, min: i64, max: i64, s: f64) -> i64 {
    let n = max - min + 1;
    min - 1 + iterative_zipfian(rng, n, s)
}

fn iterative_zipfian(rng: &mut Prng, n: i64, s: f64) -> i64 {
    if n <= 1 {
        return 1;
    }
    let b = 2.0f64.powf(s - 1.0);
    loop {
        let u = rng.double();
        let v = rng.double();
        let x = u.powf(-1.0 / (s - 1.0)).floor();
        let t = (1.0 + 1.0 / x).powf(s - 1.0);
        if v * x * (t - 1.0) / (b - 1.0) <= t / b && x <= n as f64 {
            return x as i64;
        }
    }
}

/// `hash_fnv1a(value, seed)`.
pub fn hash_fnv1a(val: i64, seed: i64) -> i64 {
    let mut result = FNV_OFFSET_BASIS ^ seed as u64;
    let mut v = val;
    for _ in 0..8 {
        let octet = (v & 0xff) as u64;
        v >>= 8;
        result ^= octet;
        result = result.wrapping_mul(FNV_PRIME);
    }
    result as i64
}

/// `hash_murmur2(value, seed)` (also plain `hash`): MurmurHash64A of the 8-byte value.
pub fn hash_murmur2(val: i64, seed: i64) -> i64 {
    let mut result = seed as u64 ^ MM2_MUL_TIMES_8;
    let mut k = val as u64;
    k = k.wrapping_mul(MM2_MUL);
    k ^= k >> MM2_ROT;
    k = k.wrapping_mul(MM2_MUL);
    result ^= k;
    result = result.wrapping_mul(MM2_MUL);
    result ^= result >> MM2_ROT;
    result = result.wrapping_mul(MM2_MUL);
    result ^= result >> MM2_ROT;
    result as i64
}

/// `permute(i, size, seed)`: the position of `i` (taken modulo `size`) in a pseudorandom
/// permutation of `[0, size)` chosen by `seed`; a bijection for each `(size, seed)`.
pub fn permute(val: i64, isize: i64, seed: i64) -> i64 {
    if isize < 2 {
        return 0;
    }
    let mut rng = Prng::seed(seed as u64);
    let size = isize as u64;
    let mut v = (val as u64) % size;
    let masklen = 63 - size.leading_zeros();
    let mask = (1u64 << masklen) - 1;
    let scramble = |x: u64, m: u64, r: u64| {
        let x = (x.wrapping_mul(m) ^ r) & mask;
        ((x << 1) & mask) | (x >> (masklen - 1))
    };
    for _ in 0..6 {
        let m = (rng.next_u64() & mask) | 1;
        let r = rng.next_u64() & mask;
        if v <= mask {
            v = scramble(v, m, r);
        }
        let m = (rng.next_u64() & mask) | 1;
        let r = rng.next_u64() & mask;
        let t = size - 1 - v;
        if t <= mask {
            v = size - 1 - scramble(t, m, r);
        }
        let r = rng.uint64_range(0, size - 1);
        v = (v + r) % size;
    }
    v as i64
}
