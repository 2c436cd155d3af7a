//! Parameter containers for the layers a model is built from, with PyTorch's layouts and
//! default initialisation. Generated models hold one per parameterized layer.

mod linear;

pub use linear::Linear;
