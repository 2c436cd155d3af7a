//! Element-wise loops compiled for the CPU's vector units: [`run_fast`] runs a loop inside
//! copies compiled for AVX-512 or AVX2 + FMA (detected at run time), so that it vectorizes
//! whatever the crate's own target. Used by the optimizers, the attention softmax, the
//! recurrent gates and the generated element-wise loops (`parallel::split_batch`).

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
#[inline(always)]
pub(crate) fn run_fast<L: ElementLoop>(update: L) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features this copy is compiled for.
            return unsafe { run_avx512(update) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { run_avx2(update) };
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
