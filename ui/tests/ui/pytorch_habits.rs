// Habits from PyTorch code: a module prefix, PyTorch's op names, Python's booleans, options
// kiln has no need for or spells differently (`padding_mode`, `elementwise_affine`). Each
// error says what to write.
kiln::model! {
    pub struct Functional {
        input x: [B, 16];
        let h = F.relu(x);
        output h;
    }
}

kiln::model! {
    pub struct Regression {
        input x: [B, 16];
        target y: [B, 1];
        let pred = linear(x, 1, bias = False);
        output pred;
        loss mse_loss(pred, y);
    }
}

kiln::model! {
    pub struct Recurrent {
        input x: [B, T, 16];
        let h = lstm(x, 32, batch_first = true);
        output h;
    }
}

kiln::model! {
    pub struct Reflection {
        input x: [B, 3, 16, 16];
        let c = conv2d(x, 8, kernel = 3, padding = 1, padding_mode = reflect);
        let n = batch_norm(c, elementwise_affine = false);
        output n;
    }
}

fn main() {}
