//! Run-time selection of the instruction set, and the `#[target_feature]` entry points that
//! compile the whole GEMM (paths, packing, kernels) once per instruction set.

#![deny(unsafe_op_in_unsafe_fn)]

use super::driver::{pack_whole_b, packed_b_len, run, MatRef, Path, Problem};
use super::kernel::{Elem, Kernel, PortableF32, PortableF64};
use super::shared::shared_blocks;
use std::sync::OnceLock;

/// The instruction sets kiln has GEMM kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (with AVX2 and FMA): 32 × 512-bit registers.
    Avx512,
    /// AVX2 with FMA: 16 × 256-bit registers.
    Avx2,
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64, scalar elsewhere).
    Portable,
}

impl Isa {
    /// Every instruction set this CPU can run, best first (the tests run each of them).
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|isa| isa.supported())
            .collect()
    }

    /// Whether this CPU can run the instruction set.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The instruction set the GEMM runs with: the best this CPU has, unless the environment
    /// variable `KILN_GEMM_ISA` (`avx512`, `avx2` or `portable`) names another one the CPU
    /// supports (to benchmark or debug the other kernel sets; any other value is ignored).
    /// Decided once per process: detection reads `cpuid` (cheap but not free) and the
    /// environment (which allocates), and the answer must not change between calls.
    /// Inline: every product asks, from `kiln-runtime`, and after the first call the answer
    /// is one load.
    #[inline]
    pub fn selected() -> Isa {
        static SELECTED: OnceLock<Isa> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let best = [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.supported())
                .unwrap_or(Isa::Portable);
            let requested = match std::env::var("KILN_GEMM_ISA").as_deref() {
                Ok("avx512") => Some(Isa::Avx512),
                Ok("avx2") => Some(Isa::Avx2),
                Ok("portable") => Some(Isa::Portable),
                _ => None,
            };
            requested.filter(|isa| isa.supported()).unwrap_or(best)
        })
    }
}

/// The size of one core's L1 data cache in bytes, read once from `cpuid` (Intel's leaf 4,
/// AMD's leaf 0x8000_001D), or 32 KiB where it cannot be read (the most common size, and the
/// smallest of the CPUs kiln is tuned on).
pub(crate) fn l1d_bytes() -> usize {
    static L1D: OnceLock<usize> = OnceLock::new();
    *L1D.get_or_init(|| detect_l1d().unwrap_or(32 * 1024))
}

/// The L1 data cache's size from the deterministic cache parameters of `cpuid`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn detect_l1d() -> Option<usize> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let max_basic = __cpuid(0).eax;
    let max_extended = __cpuid(0x8000_0000).eax;
    let leaves = [
        (4, max_basic >= 4),
        (0x8000_001D, max_extended >= 0x8000_001D),
    ];
    for (leaf, supported) in leaves {
        if !supported {
            continue;
        }
        // One sub-leaf per cache, until a null type.
        for sub in 0..16 {
            let r = __cpuid_count(leaf, sub);
            let (kind, level) = (r.eax & 0x1f, (r.eax >> 5) & 0x7);
            if kind == 0 {
                break;
            }
            if kind == 1 && level == 1 {
                let ways = (r.ebx >> 22) as usize + 1;
                let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                let sets = r.ecx as usize + 1;
                return Some(ways * partitions * line * sets);
            }
        }
    }
    None
}

/// Elsewhere kiln assumes the common size (and under Miri, which cannot run `cpuid`).
#[cfg(any(not(target_arch = "x86_64"), miri))]
fn detect_l1d() -> Option<usize> {
    None
}

/// An element type with a kernel set per instruction set.
pub trait Dispatch: Elem {
    /// Runs `p` with the kernels of `isa`.
    ///
    /// # Safety
    /// `isa` must be supported by this CPU, and `p` must describe valid memory: every element
    /// of `A` and `B` readable, every element of `C` writable (and readable unless `beta` is
    /// zero), `C` not overlapping `A` or `B`.
    unsafe fn run_on(isa: Isa, p: &Problem<Self>, path: Path);

    /// Into how many blocks of `C` two threads can share `p` with the kernels of `isa`
    /// ([`Path::Shared`]), or 0 where they cannot (where [`Path::Auto`] would not run `p` by
    /// the packed loop nest, or its shared operand would be too large to keep packed).
    fn shared_blocks_on(isa: Isa, p: &Problem<Self>) -> usize;

    /// The microkernel's tile size `(MR, NR)` with the kernels of `isa`.
    fn tile_size(isa: Isa) -> (usize, usize);

    /// Elements `pack_b_on` writes for a `k × n` `B` with the kernels of `isa`.
    fn packed_b_len(isa: Isa, k: usize, n: usize) -> usize;

    /// Packs all of `B` (`k × n`) into `dst` for [`Problem::b_packed`] with the kernels of
    /// `isa` (see `driver::pack_whole_b`).
    ///
    /// # Safety
    /// `isa` must be supported by this CPU, every element of `B` readable, and `dst` writable
    /// for [`Dispatch::packed_b_len`] elements, not overlapping `B`.
    unsafe fn pack_b_on(isa: Isa, k: usize, n: usize, b: MatRef<Self>, dst: *mut Self);
}

/// Whether an AVX-512 CPU runs `p` with the AVX2 kernels (`Narrow`) rather than the
/// AVX-512 ones (`Wide`) on `path`: a `C` no wider than the AVX2 tile, with rows for two
/// AVX-512 tiles or more. The AVX-512 tile is twice as wide, and more than half of each of
/// its multiply-adds would compute padding. W2's 64 → 10 layer (`64 × 64 × 10`): 37.6
/// GFLOP/s with the AVX-512 kernels, 47 with the AVX2 ones; `16³` (`A·Bᵀ`) 26 → 38. With one
/// AVX-512 tile of rows (`8³`) the AVX2 kernels' two tiles were slower (7.9 → 7.4;
/// benches/gemm.rs, Intel Xeon, 2026-12-05). Not for a `B` packed ahead (by the AVX-512
/// kernels), nor on the paths tests force. Only when `k` is one depth block for both kernel
/// sets (at most the smaller base `kc`), so that each element is the same sum, rounded the
/// same way, on either: a product split between two threads can hand a part of 16 columns
/// here while the whole, on one thread, runs on the AVX-512 kernels (`48 × 2000 × 48`: 32 +
/// 16 columns), or keep a part of too few rows from here (`30 × 9000 × 16`: 16 + 14 rows),
/// and with a 48 KiB L1 the two sets' depth blocks differ (512 and 256 steps).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn runs_narrow<Wide: Kernel, Narrow: Kernel>(p: &Problem<Wide::T>, path: Path) -> bool {
    matches!(path, Path::Auto | Path::Shared { .. })
        && p.b_packed.is_null()
        && p.k <= Wide::BLOCKING.kc.min(Narrow::BLOCKING.kc)
        && (2..=Narrow::NR).contains(&p.n)
        && p.m >= 2 * Wide::MR
}

/// Defines the entry points of one element type and its [`Dispatch`] impl.
///
/// `$avx512` is the kernel set an AVX-512 CPU runs; `$avx512_fn` its entry point's module, or
/// `$avx2_fn` again where the element type has no AVX-512 set of its own (f64, see
/// `AVX512_F64`), in which case the `avx512` branch of the macro compiles nothing more.
macro_rules! dispatch {
    ($t:ty, $portable_fn:ident: $portable:ident, avx512: none, $avx2_fn:ident: $avx2:ident) => {
        dispatch!(@sets $t, $portable_fn: $portable, $avx2_fn: $avx2, $avx2_fn: $avx2);
    };
    ($t:ty, $portable_fn:ident: $portable:ident, $avx512_fn:ident: $avx512:ident, $avx2_fn:ident: $avx2:ident) => {
        dispatch!(@avx512 $t, $avx512_fn: $avx512);
        dispatch!(@sets $t, $portable_fn: $portable, $avx512_fn: $avx512, $avx2_fn: $avx2);
    };
    (@avx512 $t:ty, $avx512_fn:ident: $avx512:ident) => {
        /// The AVX-512 entry point, in a module of its own (as the other two): the compiler
        /// gives each module its own codegen unit, so the five entry points (three
        /// instruction sets for f32, two for f64), each the whole driver inlined, are
        /// optimised in parallel instead of one after the other in one unit. A clean build
        /// of a one-model crate on two cores (`benches/build_time.sh`) took 32 s with this
        /// instead of 38–43.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        mod $avx512_fn {
            use super::*;

            /// Runs `p` on the AVX-512 kernels.
            ///
            /// # Safety
            /// The CPU must support AVX-512F, AVX2 and FMA; `p` as for [`Dispatch::run_on`].
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub(super) unsafe fn entry(p: &Problem<$t>, path: Path) {
                // SAFETY: forwarded from the caller.
                unsafe { run::<super::super::kernel::$avx512>(p, path) }
            }
        }

    };
    (@sets $t:ty, $portable_fn:ident: $portable:ident, $avx512_fn:ident: $avx512:ident, $avx2_fn:ident: $avx2:ident) => {
        /// The AVX2 + FMA entry point.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        mod $avx2_fn {
            use super::*;

            /// Runs `p` on the AVX2 kernels.
            ///
            /// # Safety
            /// The CPU must support AVX2 and FMA; `p` as for [`Dispatch::run_on`].
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn entry(p: &Problem<$t>, path: Path) {
                // SAFETY: forwarded from the caller.
                unsafe { run::<super::super::kernel::$avx2>(p, path) }
            }
        }

        /// The baseline entry point.
        mod $portable_fn {
            use super::*;

            /// Runs `p` on the baseline kernels. Never inlined: inlined into
            /// [`Dispatch::run_on`] (the AVX entry points cannot be, having other target
            /// features), the whole baseline driver, about 13,000 lines of LLVM IR per element
            /// type, was compiled again in every crate and codegen unit that calls the GEMM.
            /// Out of line, a clean release build of kiln-runtime (of which the GEMM was then
            /// a part) took 6.6 s instead of 8.7, and of a one-model binary 0.9 s instead of
            /// 1.9 (`benches/build_time.sh`).
            ///
            /// # Safety
            /// `p` as for [`Dispatch::run_on`].
            #[inline(never)]
            pub(super) unsafe fn entry(p: &Problem<$t>, path: Path) {
                // SAFETY: forwarded from the caller.
                unsafe { run::<$portable>(p, path) }
            }
        }

        impl Dispatch for $t {
            #[inline]
            unsafe fn run_on(isa: Isa, p: &Problem<$t>, path: Path) {
                match isa {
                    // A narrow `C` on the AVX2 kernels (see `runs_narrow`).
                    // SAFETY: an AVX-512 CPU has AVX2 and FMA; `p` from the caller.
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512
                        if runs_narrow::<super::kernel::$avx512, super::kernel::$avx2>(p, path) =>
                    unsafe { $avx2_fn::entry(p, path) },
                    // SAFETY: the caller guarantees that the CPU supports `isa`, and `p`.
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512 => unsafe { $avx512_fn::entry(p, path) },
                    // SAFETY: as above.
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => unsafe { $avx2_fn::entry(p, path) },
                    // SAFETY: the baseline needs no CPU feature; `p` from the caller.
                    _ => unsafe { $portable_fn::entry(p, path) },
                }
            }

            fn shared_blocks_on(isa: Isa, p: &Problem<$t>) -> usize {
                match isa {
                    // As `run_on` chooses the kernels for `Path::Shared`.
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512
                        if runs_narrow::<super::kernel::$avx512, super::kernel::$avx2>(
                            p,
                            Path::Auto,
                        ) =>
                    {
                        shared_blocks::<super::kernel::$avx2>(p)
                    }
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512 => shared_blocks::<super::kernel::$avx512>(p),
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => shared_blocks::<super::kernel::$avx2>(p),
                    _ => shared_blocks::<$portable>(p),
                }
            }

            fn packed_b_len(isa: Isa, k: usize, n: usize) -> usize {
                match isa {
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512 => packed_b_len::<super::kernel::$avx512>(k, n),
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => packed_b_len::<super::kernel::$avx2>(k, n),
                    _ => packed_b_len::<$portable>(k, n),
                }
            }

            unsafe fn pack_b_on(isa: Isa, k: usize, n: usize, b: MatRef<$t>, dst: *mut $t) {
                /// # Safety
                /// As for [`Dispatch::pack_b_on`], with AVX-512.
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512(k: usize, n: usize, b: MatRef<$t>, dst: *mut $t) {
                    // SAFETY: forwarded from the caller.
                    unsafe { pack_whole_b::<super::kernel::$avx512>(k, n, b, dst) }
                }
                /// # Safety
                /// As for [`Dispatch::pack_b_on`], with AVX2 and FMA.
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(k: usize, n: usize, b: MatRef<$t>, dst: *mut $t) {
                    // SAFETY: forwarded from the caller.
                    unsafe { pack_whole_b::<super::kernel::$avx2>(k, n, b, dst) }
                }
                match isa {
                    // SAFETY (all arms): the caller guarantees that the CPU supports `isa`,
                    // and the memory.
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512 => unsafe { avx512(k, n, b, dst) },
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => unsafe { avx2(k, n, b, dst) },
                    _ => unsafe { pack_whole_b::<$portable>(k, n, b, dst) },
                }
            }

            #[inline]
            fn tile_size(isa: Isa) -> (usize, usize) {
                match isa {
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512 => (super::kernel::$avx512::MR, super::kernel::$avx512::NR),
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => (super::kernel::$avx2::MR, super::kernel::$avx2::NR),
                    _ => (<$portable>::MR, <$portable>::NR),
                }
            }
        }
    };
}

dispatch!(f32, portable_f32: PortableF32, avx512_f32: Avx512F32, avx2_f32: Avx2F32);
dispatch!(f64, portable_f64: PortableF64, avx512: none, avx2_f64: Avx2F64);

#[cfg(test)]
mod tests {
    use super::l1d_bytes;

    #[test]
    fn the_l1_data_cache_has_a_plausible_size() {
        let bytes = l1d_bytes();
        assert!((16 * 1024..=512 * 1024).contains(&bytes), "{bytes} bytes");
        assert!(bytes.is_multiple_of(1024), "{bytes} bytes");
        // Where Linux reports it, the two agree.
        let sysfs = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index0/size");
        if let Some(kib) = sysfs
            .ok()
            .and_then(|s| s.trim().strip_suffix('K')?.parse::<usize>().ok())
        {
            assert_eq!(bytes, kib * 1024);
        }
    }
}
