// Habits from PyTorch code: a module prefix, PyTorch's op names, Python's booleans, options
// kiln has no need for. Each error says what to write.
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

fn main() {}
