// A model declares at least an input, a layer and an output.
kiln::model! {
    pub struct Nothing {}
}

fn main() {}
