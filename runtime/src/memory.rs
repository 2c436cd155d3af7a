//! Large buffers (parameters, gradients, optimizer state, workspaces) on transparent huge
//! pages where the operating system offers them.
//!
//! A training step streams every parameter, its gradient and the optimizer's moments through
//! the core once per step: W3's 6.3 M parameters are 176 MB of operands for Adam alone. With
//! 4 KiB pages that is 43,000 pages, far more than the TLB holds, and after the step's matrix
//! products have run the page tables are out of cache too, so the update waits on page walks
//! as well as on memory. A 2 MiB page covers 512 times as much.
//!
//! Linux backs memory with huge pages only where asked (`/sys/kernel/mm/transparent_hugepage/
//! enabled` is `madvise` on most distributions), and only for pages not yet touched. The
//! buffers here are allocated zeroed (`calloc`, whose large blocks are fresh, untouched
//! mappings), advised with `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages inside them, and
//! only then written. The allocation itself is the global allocator's, as for any `Vec`.
//!
//! Everywhere else (other systems, buffers under 2 MiB, `KILN_HUGE_PAGES=0`) these are plain
//! zeroed allocations. Huge pages change where memory comes from, never a value.

use crate::Float;
use ndarray::{Array, Dimension, ShapeBuilder};

/// The huge page size the advice is aligned to (x86-64 and most aarch64 kernels).
const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled vector of `len` elements, on huge pages where possible (see the module doc).
pub(crate) fn zeroed_vec<F: Float>(len: usize) -> Vec<F> {
    // `vec![0.0; n]` of a float allocates with `alloc_zeroed`: no element is written here.
    let buffer = vec![F::ZERO; len];
    advise_huge_pages(&buffer);
    buffer
}

/// A zero-filled array of `shape`, on huge pages where possible (see the module doc).
pub(crate) fn zeros<F: Float, Sh: ShapeBuilder<Dim = D>, D: Dimension>(shape: Sh) -> Array<F, D> {
    // Like `vec!`, ndarray's `zeros` allocates with `alloc_zeroed`.
    let array = Array::zeros(shape);
    if let Some(elements) = array.as_slice_memory_order() {
        advise_huge_pages(elements);
    }
    array
}

/// An array of `shape` filled in row-major order by `draw`, as `Array::from_shape_simple_fn`
/// fills it (the same values in the same places), on huge pages where possible.
pub(crate) fn from_fn<F: Float, Sh: ShapeBuilder<Dim = D>, D: Dimension>(
    shape: Sh,
    mut draw: impl FnMut() -> F,
) -> Array<F, D> {
    let mut array = zeros(shape);
    array.iter_mut().for_each(|element| *element = draw());
    array
}

/// Copies of `buffers`, each on huge pages where possible: an optimizer's state restored from
/// a checkpoint streams through the core as often as a state it built itself.
pub(crate) fn copies<F: Float>(buffers: &[Vec<F>]) -> Vec<Vec<F>> {
    buffers
        .iter()
        .map(|buffer| {
            let mut copy = zeroed_vec(buffer.len());
            copy.copy_from_slice(buffer);
            copy
        })
        .collect()
}

/// Grows `buffer` to `len` elements, keeping its contents and zero-filling the rest; a buffer
/// that grows past 2 MiB moves to a fresh huge-page allocation.
pub(crate) fn grow_zeroed<F: Float>(buffer: &mut Vec<F>, len: usize) {
    if buffer.len() >= len {
        return;
    }
    if len * std::mem::size_of::<F>() < HUGE_PAGE || !enabled() {
        buffer.resize(len, F::ZERO);
        return;
    }
    let mut grown = zeroed_vec(len);
    grown[..buffer.len()].copy_from_slice(buffer);
    *buffer = grown;
}

/// Whether huge pages are asked for: yes unless `KILN_HUGE_PAGES=0` (read once per process).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("KILN_HUGE_PAGES").map_or(true, |v| v.trim() != "0"))
}

/// Asks the kernel to back the whole huge pages inside `elements` with huge pages. Advice
/// only: a refusal changes nothing, so its result is ignored.
fn advise_huge_pages<F>(elements: &[F]) {
    let start = elements.as_ptr() as usize;
    let end = start + std::mem::size_of_val(elements);
    let (first, last) = (
        start.next_multiple_of(HUGE_PAGE),
        end / HUGE_PAGE * HUGE_PAGE,
    );
    if last <= first || !enabled() {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `[first, last)` lies inside `elements`' allocation and is page-aligned;
    // `MADV_HUGEPAGE` changes how the range is backed, never its contents or its mapping.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn zeroed_buffers_are_zero() {
        let v = zeroed_vec::<f32>(3 << 20);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(zeroed_vec::<f64>(0).is_empty());
        assert_eq!(zeros::<f64, _, _>((3, 2)), Array2::<f64>::zeros((3, 2)));
        assert_eq!(
            zeros::<f32, _, _>((1024, 1024)),
            Array2::<f32>::zeros((1024, 1024))
        );
    }

    #[test]
    fn from_fn_fills_as_from_shape_simple_fn() {
        for shape in [(3, 5), (1024, 768)] {
            let mut counter = 0.0f32;
            let ours = from_fn(shape, || {
                counter += 1.0;
                counter
            });
            let mut counter = 0.0f32;
            let theirs = Array2::from_shape_simple_fn(shape, || {
                counter += 1.0;
                counter
            });
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn copies_are_equal() {
        let buffers = vec![vec![1.5f32; 3], Vec::new(), vec![-2.0; 1 << 20]];
        assert_eq!(copies(&buffers), buffers);
    }

    #[test]
    fn grow_zeroed_keeps_the_contents_and_zero_fills() {
        for len in [10, 1 << 20] {
            let mut buffer = vec![7.0f32; 5];
            grow_zeroed(&mut buffer, len);
            assert_eq!(buffer.len(), len);
            assert_eq!(&buffer[..5], &[7.0; 5]);
            assert!(buffer[5..].iter().all(|&x| x == 0.0));
            grow_zeroed(&mut buffer, 3);
            assert_eq!(buffer.len(), len, "a buffer never shrinks");
        }
    }

    /// Where the system offers huge pages on request, a large buffer gets them: the
    /// `AnonHugePages` of the mappings over it in `/proc/self/smaps` add up to at least one.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_are_backed_by_huge_pages() {
        let setting = |name: &str| {
            std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{name}"))
                .unwrap_or_default()
        };
        let offered = |text: String| text.contains("[always]") || text.contains("[madvise]");
        // `defer` and `never` do not compact memory at the fault: a fragmented host may then
        // hand out small pages, which is allowed.
        let compacts = |text: String| {
            ["[always]", "[madvise]", "[defer+madvise]"]
                .iter()
                .any(|mode| text.contains(mode))
        };
        if !offered(setting("enabled")) || !compacts(setting("defrag")) || !enabled() {
            eprintln!("skipped: this system does not give huge pages on request");
            return;
        }
        let mut buffer = zeroed_vec::<f32>(8 << 20);
        buffer.iter_mut().for_each(|x| *x = 1.0);
        let (start, end) = (
            buffer.as_ptr() as usize,
            buffer.as_ptr() as usize + (32 << 20),
        );
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut huge_kib = 0;
        let mut overlaps = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            let bounds = range.and_then(|(a, b)| {
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            });
            if let Some((a, b)) = bounds.filter(|_| !line.starts_with(char::is_uppercase)) {
                overlaps = a < end && start < b;
            } else if let Some(kib) = line.strip_prefix("AnonHugePages:") {
                if overlaps {
                    huge_kib += kib
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .unwrap_or(0);
                }
            }
        }
        assert!(
            huge_kib >= 2048,
            "{huge_kib} KiB of huge pages over a 32 MiB buffer"
        );
    }
}
