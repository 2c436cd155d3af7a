// A group norm needs its number of groups (PyTorch's `num_groups`): there is no default.
kiln::model! {
    pub struct Tiny {
        input x: [B, 8, 4, 4];
        let n = group_norm(x, eps = 1e-5);
        output n;
    }
}

fn main() {}
