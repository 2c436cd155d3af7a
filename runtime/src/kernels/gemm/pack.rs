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
    if s_lane == 1 && lanes == w {
        // The lanes of one step are contiguous (A transposed, B not): a copy per step, of a
        // constant size (whole vectors).
        for p in 0..kc {
            unsafe {
                std::ptr::copy_nonoverlapping(src.offset(p as isize * s_step), dst.add(p * w), w)
            };
        }
    } else if s_lane == 1 {
        // The same for the last, partial panel, element by element: a copy of a variable
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
