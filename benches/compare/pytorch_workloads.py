#!/usr/bin/env python3
"""The workloads W1-W7 of /work/shared/bench/WORKLOADS.md (see BENCHMARKS.md) in PyTorch.

Prints one line per (workload, threads) in the same format as kiln's `cargo bench --bench
workloads`, so that `run.py` (or a human) can put the two side by side:

    W2 mlp-small     threads 1  median     0.2105 ms/step        4751.0 steps/s

Usage: python3 pytorch_workloads.py [--quick] [FILTER ...]
  --quick   count a tenth of the steps (a smoke run), as kiln's harness does
  FILTER    run only the workloads whose id contains one of the filters, e.g. W2 W5
            (default: all seven)

Exits with code 2 and a message when PyTorch is not installed.
"""

import sys
import time

try:
    import torch
except ImportError:
    print(
        "pytorch_workloads.py: PyTorch is not installed (no module named 'torch').\n"
        "Install it with `pip install torch` (the CPU build is enough) and run again.",
        file=sys.stderr,
    )
    sys.exit(2)

# WORKLOADS.md asks for every workload with 1 and with 2 threads.
THREADS = (1, 2)


def measure(warmup, counted, step):
    """Median and steps/s of `counted` timed calls after `warmup` untimed ones.

    Mirrors kiln's `measure`: each step is timed on its own and the median is the element at
    len // 2 of the sorted times, so both systems summarise the same way.
    """
    for _ in range(warmup):
        step()
    times = []
    for _ in range(counted):
        start = time.perf_counter_ns()
        step()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    median_s = times[len(times) // 2] / 1e9
    return median_s, (1.0 / median_s if median_s > 0 else float("inf"))


def report(workload_id, threads, result):
    median_s, per_second = result
    # The same format string as kiln's `report`, so one parser reads both outputs.
    print(
        f"{workload_id:<16} threads {threads}  median {median_s * 1e3:>10.4f} ms/step"
        f"  {per_second:>12.1f} steps/s",
        flush=True,
    )


def train_step(model, loss_fn, opt, x, y):
    """One train step as WORKLOADS.md defines it: forward + loss + backward + update."""

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def mlp(sizes):
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if i > 0:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(n_in, n_out))
    return torch.nn.Sequential(*layers)


def lenet():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),  # [B, 16, 5, 5] -> [B, 400]
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


class UNet(torch.nn.Module):
    """W8: the segmentation example's U-Net on 64x64 single-channel images, 11 classes per
    pixel: two 3x3 convolutions (padding 1) + ReLU per level, 16/32/64 channels, max-pooling
    down, 2x2 stride-2 transposed convolutions up, skip connections by channel concatenation,
    a 1x1 convolution to the class scores."""

    def __init__(self, classes=11):
        super().__init__()
        nn = torch.nn

        def double(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())

        self.e1, self.e2, self.mid = double(1, 16), double(16, 32), double(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.d2 = double(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.d1 = double(32, 16)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        pool = torch.nn.functional.max_pool2d
        e1 = self.e1(x)
        e2 = self.e2(pool(e1, 2))
        mid = self.mid(pool(e2, 2))
        d2 = self.d2(torch.cat([self.up2(mid), e2], dim=1))
        d1 = self.d1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


class CausalSelfAttention(torch.nn.Module):
    """nanoGPT's attention: one c_attn projection to q, k, v, causal softmax attention over
    heads (torch's fused scaled_dot_product_attention, as nanoGPT uses), c_proj back."""

    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = torch.nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = torch.nn.Linear(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        # [B, T, C] -> [B, heads, T, C / heads]
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(torch.nn.Module):
    """A pre-norm transformer block: x + attn(ln_1(x)), then x + mlp_proj(gelu(c_fc(ln_2(x))))."""

    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = torch.nn.LayerNorm(n_embd)
        self.c_fc = torch.nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = torch.nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(torch.nn.functional.gelu(self.c_fc(self.ln_2(x))))


class CharGpt(torch.nn.Module):
    """W6: nanoGPT's CPU configuration (4 blocks, 4 heads, 128 wide, block size 64), dropout 0,
    biases in the linears and LayerNorms, an untied head without bias (nanoGPT's lm_head)."""

    def __init__(self, vocab=96, block_size=64, n_embd=128, n_head=4, n_layer=4):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, n_embd)
        self.wpe = torch.nn.Embedding(block_size, n_embd)
        self.blocks = torch.nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = torch.nn.LayerNorm(n_embd)
        self.head = torch.nn.Linear(n_embd, vocab, bias=False)

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class LstmSentiment(torch.nn.Module):
    """W7: embedding (padding row 0), one batch-first LSTM layer, the last step's hidden
    state to 3 classes."""

    def __init__(self, vocab=20000, dim=128, hidden=128, classes=3):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = torch.nn.LSTM(dim, hidden, batch_first=True)
        self.fc = torch.nn.Linear(hidden, classes)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.fc(out[:, -1])


def main(argv):
    quick = "--quick" in argv
    filters = [a for a in argv if not a.startswith("--")]

    def wanted(workload_id):
        return not filters or any(f in workload_id for f in filters)

    def counted(n):
        return -(-n // 10) if quick else n  # ceil(n / 10), like kiln's div_ceil

    def run(workload_id, warmup, n, step):
        # Each thread count reuses the same model, data and optimizer: only the thread pool
        # changes between the two measurements.
        for t in THREADS:
            torch.set_num_threads(t)
            report(workload_id, t, measure(warmup, counted(n), step))

    # ATen's vector code (capped by `ATEN_CPU_CAPABILITY`, see isa.py), so a capped run shows
    # that the cap took.
    print(f"PyTorch {torch.__version__}, ATen vector code {torch.backends.cpu.get_cpu_capability()}",
          flush=True)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)
    ce = torch.nn.CrossEntropyLoss()

    # Synthetic data is made once, before any timing, as WORKLOADS.md requires.
    if wanted("W1"):
        model = torch.nn.Linear(1, 1)
        x = torch.rand(1000, 1) * 2 - 1
        y = 3 * x + 2
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        run("W1 seed-linreg", 10, 1000, train_step(model, torch.nn.MSELoss(), opt, x, y))

    if wanted("W2") or wanted("W5"):
        model = mlp([784, 128, 64, 10])  # W5 times the forward pass of this same model
        if wanted("W2"):
            x = torch.rand(64, 784)
            y = torch.randint(0, 10, (64,))
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            run("W2 mlp-small", 20, 300, train_step(model, ce, opt, x, y))
        if wanted("W5"):
            x = torch.rand(1, 784)

            def infer():
                # no_grad inside the step: the timed call is exactly one inference.
                with torch.no_grad():
                    model(x)

            run("W5 infer-mlp", 100, 5000, infer)

    if wanted("W3"):
        model = mlp([1024, 2048, 2048, 10])
        x = torch.rand(256, 1024)
        y = torch.randint(0, 10, (256,))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run("W3 mlp-wide", 3, 20, train_step(model, ce, opt, x, y))

    if wanted("W4"):
        model = lenet()
        x = torch.rand(64, 1, 28, 28)
        y = torch.randint(0, 10, (64,))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run("W4 lenet", 10, 100, train_step(model, ce, opt, x, y))

    if wanted("W6"):
        model = CharGpt()
        x = torch.randint(0, 96, (12, 64))
        y = torch.randint(0, 96, (12, 64))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

        def loss_all_positions(logits, target):
            # The mean over all 12 x 64 positions.
            return ce(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

        run("W6 char-gpt", 5, 50, train_step(model, loss_all_positions, opt, x, y))

    if wanted("W7"):
        model = LstmSentiment()
        # Token 0 is padding: it occurs like any other id here, which costs the same.
        x = torch.randint(0, 20000, (64, 48))
        y = torch.randint(0, 3, (64,))
        # The embedding's gradient is dense (torch's default, sparse=False), so Adam updates
        # the whole 20000 x 128 table every step.
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run("W7 lstm-sentiment", 5, 50, train_step(model, ce, opt, x, y))

    if wanted("W8"):
        model = UNet()
        x = torch.rand(16, 1, 64, 64)
        y = torch.randint(0, 11, (16, 64, 64))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run("W8 unet-segment", 3, 20, train_step(model, ce, opt, x, y))


if __name__ == "__main__":
    main(sys.argv[1:])
