//! Parameter containers for the layers a model is built from, with PyTorch's layouts and
//! default initialisation. Generated models hold one per parameterized layer.

mod attention;
mod conv;
mod linear;
mod norm;

pub use attention::MultiheadAttention;
pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{BatchNorm, LayerNorm};
