//! Training end to end, one module per subject: `Trainer::fit` (`fit`), `Trainer::fit_batches`
//! on batch sources (`fit_batches`) and on sequence pairs (`seq2seq`), checkpoints and resume
//! (`checkpoint`), the trainer's moving average of the weights (`ema`), image augmentation
//! (`augment`), frozen parameters in the backward pass (`freeze`), non-finite values
//! (`non_finite`), metrics beyond accuracy (`metrics`) and data-parallel training over thread
//! ranks (`data_parallel`); `common` holds what they share.
//! One test binary, so that the runtime is compiled for all of them once.

mod augment;
mod checkpoint;
mod common;
mod data_parallel;
mod ema;
mod fit;
mod fit_batches;
mod freeze;
mod metrics;
mod non_finite;
mod seq2seq;
