//! Training end to end, one module per subject: `Trainer::fit` (`fit`), checkpoints and
//! resume (`checkpoint`), non-finite values (`non_finite`), metrics beyond accuracy
//! (`metrics`) and data-parallel training over thread ranks (`data_parallel`). One test binary, so that the runtime is compiled for all of
//! them once.

mod checkpoint;
mod data_parallel;
mod fit;
mod fit_batches;
mod metrics;
mod non_finite;
mod seq2seq;
