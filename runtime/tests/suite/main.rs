//! The runtime's integration tests that need no allocation counting, in one test binary (one
//! link instead of nine). The tests that count allocations (`data_loader`, `gemm_alloc`,
//! `no_alloc`, `text_data`) install a counting global allocator and stay binaries of their
//! own.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod data_bundled;
mod data_csv;
mod data_dataset;
mod data_idx;
mod io;
mod optim;
mod parity;
#[cfg(feature = "text")]
mod text_vocab;
