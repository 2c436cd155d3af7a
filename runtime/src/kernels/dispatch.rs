//! Element-wise loops compiled for the CPU's vector units: [`run_fast`] runs a loop inside
//! copies compiled for AVX-512 or AVX2 + FMA (detected at run time), so that it vectorizes
//! whatever the crate's own target. Used by the optimizers, the attention softmax, the
//! recurrent gates and the generated element-wise loops (`parallel::split_batch`).

#[cfg(target_arch = "x86_64")]
use super::gemm::Isa;

/// An element-wise loop (an optimizer's update, a kernel's row, a model's fused loop), run by
/// [`run_fast`].
pub(crate) trait ElementLoop {
    /// Runs the loop. Implementations are `#[inline(always)]` so that the loop is compiled
    /// inside [`run_fast`]'s feature-specific copies.
    fn run(self);
}

/// Runs `update` compiled for the CPU's vector units and fused multiply-add where it has them
/// (AVX-512 or AVX2 + FMA, detected at run time). Without this, a portable build turns every
/// `mul_add` of the update into a library call per element, which made an Adam step over
/// W3's 6.3 M parameters cost more than a fifth of the whole training step. The arithmetic
/// is the same in every copy: fused operations round once either way.
///
/// The instruction set is the GEMM's ([`Isa::selected`](kiln_gemm::Isa::selected)): the best
/// the CPU has, or the one `KILN_GEMM_ISA` names, so that forcing `avx2` on an AVX-512 machine
/// runs every vector loop as an AVX2-only CPU would.
#[inline(always)]
pub(crate) fn run_fast<L: ElementLoop>(update: L) {
    #[cfg(target_arch = "x86_64")]
    {
        match Isa::selected() {
            // SAFETY: the selected instruction set is supported by this CPU.
            Isa::Avx512 => return unsafe { run_avx512(update) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { run_avx2(update) },
            Isa::Portable => {}
        }
    }
    update.run();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<L: ElementLoop>(update: L) {
    update.run();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<L: ElementLoop>(update: L) {
    update.run();
}
