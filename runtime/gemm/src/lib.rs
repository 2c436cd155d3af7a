//! The GEMM engine of kiln: one matrix product `C = alpha · A · B + beta · C` on raw strided
//! memory, BLIS-style, compiled once per instruction set (AVX-512, AVX2 + FMA, and the
//! target's baseline) and chosen at run time.
//!
//! This crate is the part of `kiln-runtime` that takes the longest to compile (its kernels
//! are instantiated five times: f32 on AVX-512, AVX2 + FMA and the baseline, f64 on the last
//! two, AVX-512 CPUs running f64 on the AVX2 kernels), kept in a crate of
//! its own so that a clean build compiles it while `kiln-runtime`'s front end runs. It has
//! no dependencies. Its safe, documented front door is `kiln_runtime::kernels::gemm`
//! (slices, transposes, the two-thread split); this crate's items are the unsafe engine
//! underneath and are not meant to be called directly.
//!
//! - `driver.rs`: the problem description ([`Problem`]), the choice of algorithm per call
//!   ([`Path`]), and the blocked loop nest (pack a `kc × nc` block of `B`, then for each
//!   `mc × kc` block of `A` pack it and sweep the microkernel over its tiles).
//! - `shared.rs`: the same loop nest as one thread's share of a product two threads compute
//!   together, claiming blocks of `C` from either end ([`Claims`]).
//! - `kernel.rs`: the `MR × NR` register-tile microkernels, written as fixed-size arrays
//!   that LLVM vectorises, one per (instruction set, element type).
//! - `arch.rs`: `#[target_feature]` entry points compiling everything above once for
//!   AVX-512, once for AVX2+FMA and once for the baseline ([`Dispatch`]), and the run-time
//!   selection ([`Isa::selected`], done once per process; `KILN_GEMM_ISA` picks a lesser one).
//! - `pack.rs`: copying blocks into the panel layout the microkernel streams.
//! - `gemv.rs`: the unpacked paths: `m = 1` or `n = 1` (batch-1 inference is `y = x·Wᵀ`,
//!   one dot product per output), `C` narrower than half a tile, as matrix-vector
//!   products, and tiles of dot products where both operands are contiguous along a deep
//!   `k` (few rows, or `B`'s columns through offsets: a convolution's weight gradient).
//! - `simd.rs`: explicit vector registers for the matrix-vector kernels.
//! - `buffer.rs`: the thread-local packing buffers (grown once, so that a warm training step
//!   allocates nothing).

#![warn(missing_docs)]

mod arch;
mod buffer;
mod driver;
mod gemv;
mod kernel;
mod pack;
mod shared;
mod simd;

pub use arch::{Dispatch, Isa};
pub use driver::{MatRef, Path, Problem};
pub use kernel::{Blocking, Elem};
pub use shared::{block_range, Claims};

/// Columns a row of `B` must stay readable past `n` for a product with `B`'s rows through
/// offsets ([`Problem::b_rows`]): every kernel reads whole panels of `NR` columns (at most
/// 32) and stores only the `n` real ones.
pub const ROWS_SLACK: usize = 32;
