//! Products two threads compute together: [`Claims`] hands out blocks of `C` from both
//! ends, and [`shared`] is one thread's share, the packed loop nest of `driver.rs` over the
//! blocks it claims.
//!
//! Takes a problem [`Path::Auto`](crate::Path::Auto) would run by the packed loop nest (see
//! [`share_plan`]) and a counter of its blocks; returns when the counter is empty, having
//! written the blocks this thread claimed. Each element is the same sum, in the same order,
//! as on one thread.

#![deny(unsafe_op_in_unsafe_fn)]

use super::buffer::Scratch;
use super::driver::{
    block_size, capped_block, gemv_first, macro_kernel, pack_whole_b, packed_b_len,
    packed_reads_a_in_place, reads_b_in_place, update_scalars, ABlock, ASource, BSource, Problem,
    KEPT_A_MAX,
};
use super::kernel::{Blocking, Elem, Kernel};
use std::sync::atomic::{AtomicU64, Ordering};

/// Blocks of a product's `C` that two threads hand out between them
/// ([`Path::Shared`](crate::Path::Shared)):
/// one thread claims them from the front, the other from the back, one at a time, until
/// they meet. At equal speeds each thread takes the same half in every call (and works on
/// the part of the operands its own cache holds); when one is slowed, the other takes on
/// more instead of waiting for it.
// A cache line of its own: both threads write it, and it lives on the caller's stack, next
// to what the caller writes while the helper claims.
#[derive(Debug)]
#[repr(align(64))]
pub struct Claims {
    /// The unclaimed blocks `front..back`, as `front << 32 | back`.
    state: AtomicU64,
}

impl Claims {
    /// `blocks` unclaimed blocks.
    ///
    /// # Panics
    /// If `blocks` is more than `u32::MAX` (the two ends share one 64-bit word).
    pub fn new(blocks: usize) -> Self {
        let blocks = u32::try_from(blocks).expect("at most u32::MAX blocks");
        Self {
            state: AtomicU64::new(u64::from(blocks)),
        }
    }

    /// The next unclaimed block from the front or from the back, or `None` once every
    /// block is claimed. Each block is returned once, to one caller.
    pub fn claim(&self, from_front: bool) -> Option<usize> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (front, back) = (state >> 32, state & 0xffff_ffff);
            if front >= back {
                return None;
            }
            let (next, block) = if from_front {
                (state + (1 << 32), front)
            } else {
                (state - 1, back - 1)
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(block as usize),
                Err(now) => state = now,
            }
        }
    }
}

/// The units of block `block` of `units` cut into `blocks` nearly equal, consecutive blocks
/// (the first `units % blocks` one unit longer).
pub fn block_range(units: usize, blocks: usize, block: usize) -> std::ops::Range<usize> {
    let (base, extra) = (units / blocks, units % blocks);
    let start = block * base + block.min(extra);
    start..start + base + usize::from(block < extra)
}

/// The most blocks a shared product is cut into: enough for a slowed thread's share to move
/// to the other in steps of an eighth, few enough that claiming costs nothing measurable.
const SHARED_BLOCKS: usize = 8;

/// How [`shared`] cuts a product's `C` between two threads.
#[derive(Clone, Copy)]
pub(super) struct SharePlan {
    /// Along `n` (blocks of whole panels of columns; each thread packs all of `A` once and
    /// keeps it), else along `m` (blocks of whole tiles of rows; each thread packs all of
    /// `B` once).
    columns: bool,
    /// Panels of `NR` columns, or tiles of `MR` rows, along the cut.
    units: usize,
    /// Blocks of units (at least 2).
    blocks: usize,
    /// The blocking [`Path::Auto`](crate::Path::Auto) runs the whole with.
    blocking: Blocking,
}

/// How `p` is shared by two threads, or `None` where it cannot be:
/// [`Path::Auto`](crate::Path::Auto) would not run it by `driver::packed` (a matrix-vector
/// product, `B` read in place or placed otherwise, no product at all), too few units to cut,
/// or the operand each thread would keep packed larger than [`KEPT_A_MAX`]. Cut along `n`
/// when `n ≥ m`, as the static split is.
pub(super) fn share_plan<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) -> Option<SharePlan> {
    let placed = !p.b_packed.is_null() || !p.b_rows.is_null() || !p.b_cols.is_null();
    let no_product = p.k == 0 || p.alpha == K::T::ZERO;
    if p.m == 0
        || p.n == 0
        || placed
        || no_product
        || gemv_first::<K>(p)
        || reads_b_in_place::<K>(p, blocking)
    {
        return None;
    }
    let columns = p.n >= p.m;
    let (len, unit, max) = if columns {
        (p.n, K::NR, blocking.nc)
    } else {
        (p.m, K::MR, blocking.mc)
    };
    let units = len.div_ceil(unit);
    // No block longer than the whole's blocks along the cut.
    let longest = block_size(len, max, unit) / unit;
    let blocks = units.min(SHARED_BLOCKS).max(units.div_ceil(longest));
    let kept = if columns {
        p.m.next_multiple_of(K::MR) * p.k
    } else {
        packed_b_len::<K>(p.k, p.n)
    };
    (blocks >= 2 && kept <= KEPT_A_MAX).then_some(SharePlan {
        columns,
        units,
        blocks,
        blocking,
    })
}

/// How many blocks two threads share `p` in ([`Path::Shared`](crate::Path::Shared)), or 0
/// where they cannot.
pub(crate) fn shared_blocks<K: Kernel>(p: &Problem<K::T>) -> usize {
    share_plan::<K>(p, super::driver::blocking::<K>()).map_or(0, |plan| plan.blocks)
}

/// One thread's share of a product computed by two ([`Path::Shared`](crate::Path::Shared)):
/// the blocks of `C` it claims, each computed as `driver::packed` computes it within the
/// whole (the same depth blocks `kc`, so every element is the same sum in the same order as
/// on one thread).
///
/// - Along `n`: a block is a range of columns no wider than `packed`'s `nc`. The first block
///   a thread claims packs all of `A` and keeps it for its later blocks; each block packs
///   its own columns of `B`.
/// - Along `m`: a block is a range of rows no taller than `packed`'s `mc`. The first block a
///   thread claims packs all of `B` ([`pack_whole_b`]'s layout); each block packs its own
///   rows of `A`, one depth block at a time, for every block of columns.
///
/// Each thread packs the shared operand once, as in a static split in two; a thread that
/// claims nothing packs nothing.
///
/// # Safety
/// As for `driver::run`, and `plan` from [`share_plan`] for `p`.
#[inline(always)]
pub(super) unsafe fn shared<K: Kernel>(
    p: &Problem<K::T>,
    plan: SharePlan,
    claims: &Claims,
    from_front: bool,
) {
    let (mr, nr) = (K::MR, K::NR);
    let blocking = plan.blocking;
    let kc_max = block_size(p.k, blocking.kc, 1);
    let mc_max = block_size(p.m, blocking.mc, mr);
    let nc_max = block_size(p.n, blocking.nc, nr);
    let a_in_place = packed_reads_a_in_place::<K>(p);
    // Along `n`, `A` is kept whole unless read in place.
    let keep_a = plan.columns && !a_in_place;
    let m_pad = p.m.next_multiple_of(mr);
    // Sized for any problem no larger than `p` (as `reserve` does), so that a smaller call
    // later (an epoch's last batch) grows nothing.
    let cap = capped_block;
    let a_block = cap(p.m, blocking.mc, mr) * cap(p.k, blocking.kc, 1);
    let (a_len, b_len) = if plan.columns {
        let a_len = if keep_a { m_pad * p.k } else { a_block };
        (a_len, cap(p.k, blocking.kc, 1) * cap(p.n, blocking.nc, nr))
    } else {
        (a_block, packed_b_len::<K>(p.k, p.n))
    };
    let mut scratch = Scratch::take();
    let (a_pack, b_pack) = scratch.get::<K::T>(a_len, b_len);
    // Whether this thread has packed its shared operand (`A` along `n`, `B` along `m`).
    let mut packed_whole = false;
    while let Some(block) = claims.claim(from_front) {
        let units = block_range(plan.units, plan.blocks, block);
        if plan.columns {
            let jc = units.start * nr;
            let nc = (units.end * nr).min(p.n) - jc;
            let a = ASource {
                buffer: a_pack,
                kept: keep_a,
                pack_kept: !packed_whole,
                in_place: a_in_place,
            };
            // SAFETY: `nc` is at most `nc_max` (see `share_plan`); the buffers hold
            // `kc_max · nc_max` and `m_pad · k` (kept) or `mc_max · kc_max` elements.
            unsafe { K::column_block(p, jc, nc, (kc_max, mc_max), a, BSource::Pack(b_pack)) };
        } else {
            if !packed_whole {
                // SAFETY: all of B is readable; the buffer holds `packed_b_len` elements.
                unsafe { pack_whole_b::<K>(p.k, p.n, p.b, b_pack) };
            }
            let ic = units.start * mr;
            let mc = (units.end * mr).min(p.m) - ic;
            let mut pc = 0;
            while pc < p.k {
                let kc = kc_max.min(p.k - pc);
                let (beta, bias) = update_scalars(p, pc);
                // SAFETY: the block `m ∈ ic..ic+mc` (at most `mc_max` rows, see
                // `share_plan`), `k ∈ pc..pc+kc` is inside A; the buffer holds
                // `mc_max · kc_max` elements.
                let a = unsafe { ABlock::take::<K>(p, ic, pc, mc, kc, a_in_place, a_pack) };
                let mut jc = 0;
                while jc < p.n {
                    let nc = nc_max.min(p.n - jc);
                    // In `pack_whole_b`'s layout, the blocks of the columns before `jc` hold
                    // `jc · k` elements (whole panels), and those of this one's earlier depth
                    // blocks `pc · ceil(nc / NR) · NR`.
                    let b_block = b_pack
                        .cast_const()
                        .wrapping_add(jc * p.k + pc * nc.next_multiple_of(nr));
                    // SAFETY: as in `packed` (the block was packed by `pack_whole_b`).
                    unsafe { macro_kernel::<K>(p, beta, bias, ic, jc, mc, nc, kc, a, b_block) };
                    jc += nc;
                }
                pc += kc;
            }
        }
        packed_whole = true;
    }
}
