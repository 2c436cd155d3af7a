//! Parameter containers for the layers a model is built from, with PyTorch's layouts and
//! default initialisation. Generated models hold one per parameterized layer.

mod attention;
mod bias;
mod conv;
mod embedding;
mod linear;
mod norm;
mod prelu;
mod recurrent;

pub use attention::MultiheadAttention;
pub use bias::Bias;
pub use conv::{Conv1d, Conv2d, ConvTranspose2d};
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{BatchNorm, GroupNorm, LayerNorm, LayerNormNd, RmsNorm, RunningStats};
pub use prelu::PRelu;
pub use recurrent::{Gru, Lstm, Rnn};
