//! Packing: copying a block of `A` or `B` into the layout the microkernel streams.
//!
//! A block of `len` lanes (rows of `A`, or columns of `B`) by `kc` steps is cut into panels
//! of `w` lanes (`w` = `MR` for `A`, `NR` for `B`). Panel `q` holds lanes `q·w .. q·w + w`,
//! step-major: element (lane `i`, step `p`) goes to `panel[p·w + i]`, so the microkernel reads
//! both operands strictly sequentially. The last panel is padded with zeros up to `w` lanes,
//! so the microkernel always computes a full tile (the padded rows/columns of the result are
//! simply not stored).

#![deny(unsafe_op_in_unsafe_fn)]

use super::kernel::Elem;
use super::simd::{LaneStarts, Vector};

/// Steps of every whole panel copied before the next ones, when each step's lanes are
/// contiguous in the source (see [`pack`]). Measured against one panel at a time
/// (benches/gemm.rs, one thread, Intel Xeon, 2026-12-05): W6's weight gradients (`A`
/// transposed, 8-lane panels of rows 0.5-2 KiB apart) 131-142 -> 145-150 GFLOP/s with
/// AVX-512 and 85-93 -> 94-99 with AVX2, W3's (rows 8 KiB apart) 139-144 -> 146-150
/// (AVX-512), and W3's input gradients (`B` = the weight, not transposed, 32-lane panels of
/// rows 4-8 KiB apart) 130-134 -> 141 (AVX-512) and 84-85 -> 88-90 (AVX2). 8 steps measured
/// the same; in a microbenchmark of the copy alone (warm source) 4 steps were slower than
/// one panel at a time. Steps of training, one thread: W3 -5% (both instruction sets), W6
/// -1.5% (AVX-512) and -4% (AVX2, its attention's `k` = 64 products), W7 -4 to -6%, but W2
/// +2% with AVX-512 (its weight gradients, `k` = 64, 8 and 16 panels); keeping one panel at a
/// time below 128 steps gave W2 back and took W6's gain away.
const COPY_STEPS: usize = 16;

/// Packs the `len × kc` block whose element (lane `i`, step `p`) is at
/// `src + i·s_lane + p·s_step` into `ceil(len / w)` panels of `w × kc` at `dst`.
///
/// # Safety
/// Every element of the block must be readable, and `dst` writable for
/// `ceil(len / w) · w · kc` elements, not overlapping the source.
#[inline(always)]
pub(super) unsafe fn pack<V: Vector>(
    w: usize,
    len: usize,
    kc: usize,
    src: *const V::T,
    s_lane: isize,
    s_step: isize,
    dst: *mut V::T,
) {
    let mut dst = dst;
    let mut lane0 = 0;
    if s_lane == 1 {
        // The lanes of one step are contiguous (A transposed, B not): a step of every whole
        // panel is one run of the source. [`COPY_STEPS`] steps of each panel in turn, then
        // the next steps: the source is read as that many rows side by side, each along its
        // length, where a panel at a time read a strip of `w` elements down every row.
        let whole = len / w;
        let mut p0 = 0;
        while p0 < kc {
            let steps = COPY_STEPS.min(kc - p0);
            for q in 0..whole {
                for p in p0..p0 + steps {
                    // SAFETY: lanes `q·w .. q·w + w` of step `p` are inside the block, and
                    // step `p` of panel `q` (`w` elements) inside `dst`'s extent. The
                    // constant `w` (the tile size, after inlining) makes the copy whole
                    // vector moves.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.offset(p as isize * s_step).add(q * w),
                            dst.add(q * w * kc + p * w),
                            w,
                        )
                    };
                }
            }
            p0 += steps;
        }
        lane0 = whole * w;
        dst = dst.wrapping_add(whole * w * kc);
    }
    while lane0 < len {
        let lanes = w.min(len - lane0);
        let panel_src = src.wrapping_offset(lane0 as isize * s_lane);
        // SAFETY: lanes `lane0 .. lane0 + lanes` are inside the block, and the panel's
        // `w · kc` destination elements are inside `dst`'s extent.
        unsafe {
            if lanes == w {
                // The constant `w` here lets every copy below become whole-vector moves.
                pack_panel::<V>(w, w, kc, panel_src, s_lane, s_step, dst);
            } else {
                // The last, partial panel: zeros first, then the lanes that exist.
                std::ptr::write_bytes(dst, 0, w * kc);
                pack_panel::<V>(w, lanes, kc, panel_src, s_lane, s_step, dst);
            }
        }
        dst = dst.wrapping_add(w * kc);
        lane0 += w;
    }
}

/// [`pack`] for a block of `B` whose columns (the lanes) are anywhere: lane `i` is the `kc`
/// contiguous steps from `base + cols[i]` ([`Problem::b_cols`](super::driver::Problem)).
///
/// # Safety
/// `cols` readable for `len` offsets, each lane readable for `kc` elements, and `dst`
/// writable for `ceil(len / w) · w · kc` elements, not overlapping the source.
#[inline(always)]
pub(super) unsafe fn pack_cols<V: Vector>(
    w: usize,
    len: usize,
    kc: usize,
    base: *const V::T,
    cols: *const usize,
    dst: *mut V::T,
) {
    let mut dst = dst;
    let mut lane0 = 0;
    while lane0 < len {
        let lanes = w.min(len - lane0);
        let src = LaneStarts {
            base,
            stride: 0,
            offsets: cols.wrapping_add(lane0),
        };
        // SAFETY: lanes `lane0 .. lane0 + lanes` are inside the block, and the panel's
        // `w · kc` destination elements are inside `dst`'s extent.
        unsafe {
            if lanes == w {
                V::pack_transposed(w, w, kc, src, dst);
            } else {
                std::ptr::write_bytes(dst, 0, w * kc);
                V::pack_transposed(w, lanes, kc, src, dst);
            }
        }
        dst = dst.wrapping_add(w * kc);
        lane0 += w;
    }
}

/// One panel: lanes `0 .. lanes` (`≤ w`) of `kc` steps, lane `i` of step `p` to
/// `dst[p·w + i]`. Lanes `lanes .. w` of `dst` are left as they are or set to zero.
///
/// # Safety
/// As for [`pack`], for one panel.
#[inline(always)]
unsafe fn pack_panel<V: Vector>(
    w: usize,
    lanes: usize,
    kc: usize,
    src: *const V::T,
    s_lane: isize,
    s_step: isize,
    dst: *mut V::T,
) {
    // SAFETY (all arms): `i < lanes` and `p < kc` address elements of the block, and
    // `p·w + i < w·kc` addresses the panel.
    if s_lane == 1 {
        // The lanes of one step are contiguous (A transposed, B not; whole panels are copied
        // by [`pack`]): the last, partial panel, element by element. A copy of a variable
        // length would be a call to `memmove` per step, for a few elements each (measured:
        // 7% of a 32³ product with A transposed).
        for p in 0..kc {
            let (from, to) = unsafe { (src.offset(p as isize * s_step), dst.add(p * w)) };
            for i in 0..lanes {
                unsafe { *to.add(i) = *from.add(i) };
            }
        }
    } else if s_step == 1 {
        // Each lane is contiguous along `k` (A not transposed, B transposed): a transpose,
        // in registers where the instruction set has one.
        unsafe {
            V::pack_transposed(
                w,
                lanes,
                kc,
                LaneStarts {
                    base: src,
                    stride: s_lane,
                    offsets: std::ptr::null(),
                },
                dst,
            )
        };
    } else {
        for p in 0..kc {
            for i in 0..lanes {
                unsafe {
                    *dst.add(p * w + i) = *src.offset(i as isize * s_lane + p as isize * s_step)
                };
            }
        }
    }
}

/// [`Vector::pack_transposed`] element by element. Blocks of `TB` steps are read lane by
/// lane (each a short contiguous run, so every cache line fetched is used whole) and written
/// step-major.
///
/// # Safety
/// As for [`Vector::pack_transposed`].
#[inline(always)]
pub(super) unsafe fn pack_transposed_scalar<T: Elem>(
    w: usize,
    lanes: usize,
    kc: usize,
    src: LaneStarts<T>,
    dst: *mut T,
) {
    const TB: usize = 8;
    // SAFETY (all accesses): `i < lanes` and `p < kc` address the block, `p·w + i < w·kc`
    // the panel.
    let mut p0 = 0;
    while p0 + TB <= kc {
        for i in 0..lanes {
            // SAFETY: `i < lanes`.
            let s = unsafe { src.at(i) }.wrapping_add(p0);
            for q in 0..TB {
                unsafe { *dst.add((p0 + q) * w + i) = *s.add(q) };
            }
        }
        p0 += TB;
    }
    for p in p0..kc {
        for i in 0..lanes {
            unsafe { *dst.add(p * w + i) = *src.at(i).add(p) };
        }
    }
}
