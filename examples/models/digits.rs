//! The two digit classifiers: the 8x8 CNN and LeNet-5, shared by the `digits` example, which
//! trains them, and the `serve` example, which serves them.

kiln::model! {
    /// A small CNN for 8x8 digit images.
    pub struct DigitsCnn {
        input image: [B, 1, 8, 8];
        target digit: [B] classes 10;
        let conv1 = relu(conv2d(image, 16, kernel = 3, padding = 1));
        let conv2 = relu(conv2d(conv1, 32, kernel = 3, padding = 1));
        let pooled = max_pool2d(conv2, 2);
        let hidden = relu(linear(flatten(pooled), 64));
        let logits = linear(hidden, 10);
        output logits;
        loss cross_entropy(logits, digit);
    }
}

kiln::model! {
    /// LeNet-5 for 28x28 MNIST images.
    pub struct LeNet5 {
        input image: [B, 1, 28, 28];
        target digit: [B] classes 10;
        let c1 = relu(conv2d(image, 6, kernel = 5, padding = 2));
        let s2 = max_pool2d(c1, 2);
        let c3 = relu(conv2d(s2, 16, kernel = 5));
        let s4 = max_pool2d(c3, 2);
        let f5 = relu(linear(flatten(s4), 120));
        let f6 = relu(linear(f5, 84));
        let logits = linear(f6, 10);
        output logits;
        loss cross_entropy(logits, digit);
    }
}
