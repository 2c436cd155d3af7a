// PyTorch's method style (`x.relu()`, `h.softmax(dim = -1)`): kiln's ops are functions, and the
// error writes the call for you.
kiln::model! {
    pub struct Net {
        input x: [B, 64];
        let h = linear(x, 32).relu();
        output h;
    }
}

fn main() {}
