#!/usr/bin/env python3
"""The workloads W1-W8 of BENCHMARKS.md in JAX: each train step is one `jax.jit`-compiled
function (forward, loss, `jax.grad`, optimizer update) over parameter pytrees, with the
parameter and optimizer-state buffers donated so XLA updates them in place.

Prints one line per (workload, threads) in the same format as kiln's `cargo bench --bench
workloads` and `pytorch_workloads.py`, so `run.py` reads all three:

    W2 mlp-small     threads 1  median     0.2105 ms/step        4751.0 steps/s

Usage: python3 jax_workloads.py [--quick] [--threads N] [FILTER ...]
  --quick      count a tenth of the steps (a smoke run)
  --threads N  measure only with N threads (default: 1, then 2, each in a fresh process)
  FILTER       only the workloads whose id contains a filter, e.g. W2 W5 (default: all)

XLA sizes its CPU thread pool once per process from the CPUs it may run on, so each thread
count runs in a child process pinned with `os.sched_setaffinity` to that many CPUs (and, for
one thread, with Eigen's multi-threading off).

Exits with code 2 and a message when JAX is not installed.
"""

import os
import subprocess
import sys
import time

THREADS = (1, 2)
CHILD_ENV = "KILN_JAX_BENCH_THREADS"


def pin_before_import():
    """In a child: restrict the process to the first N CPUs before XLA reads the count."""
    threads = os.environ.get(CHILD_ENV)
    if threads is None:
        return None
    threads = int(threads)
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    return threads


CHILD_THREADS = pin_before_import()

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
except ImportError:
    print(
        "jax_workloads.py: JAX is not installed (no module named 'jax').\n"
        "Install it with `pip install 'jax[cpu]'` and run again.",
        file=sys.stderr,
    )
    sys.exit(2)


def measure(warmup, counted, step):
    """Median and steps/s of `counted` timed calls after `warmup` untimed ones (the first
    warm-up call also compiles). Each call blocks until its results are computed: JAX
    dispatches asynchronously, and an unblocked timing would measure only the dispatch."""
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
    print(
        f"{workload_id:<16} threads {threads}  median {median_s * 1e3:>10.4f} ms/step"
        f"  {per_second:>12.1f} steps/s",
        flush=True,
    )


# ---- initialisation (PyTorch's defaults; the values do not matter for timing) ----


class Keys:
    """A stream of PRNG keys from one seed."""

    def __init__(self, seed):
        self.key = jax.random.PRNGKey(seed)

    def __call__(self):
        self.key, sub = jax.random.split(self.key)
        return sub


def uniform(keys, shape, bound):
    return jax.random.uniform(keys(), shape, jnp.float32, -bound, bound)


def linear_params(keys, n_in, n_out, bias=True):
    """nn.Linear: weight [out, in], bias [out], U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / n_in**0.5
    p = {"w": uniform(keys, (n_out, n_in), bound)}
    if bias:
        p["b"] = uniform(keys, (n_out,), bound)
    return p


def linear(p, x):
    y = x @ p["w"].T
    return y + p["b"] if "b" in p else y


def conv_params(keys, c_in, c_out, k):
    """nn.Conv2d: weight [out, in, k, k], bias [out]."""
    bound = 1.0 / (c_in * k * k) ** 0.5
    return {"w": uniform(keys, (c_out, c_in, k, k), bound), "b": uniform(keys, (c_out,), bound)}


def conv2d(p, x, padding):
    y = lax.conv_general_dilated(
        x, p["w"], (1, 1), [(padding, padding)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return y + p["b"][None, :, None, None]


def conv_transpose_params(keys, c_in, c_out, k):
    """nn.ConvTranspose2d: weight [in, out, k, k], bias [out]."""
    bound = 1.0 / (c_out * k * k) ** 0.5
    return {"w": uniform(keys, (c_in, c_out, k, k), bound), "b": uniform(keys, (c_out,), bound)}


def conv_transpose2d_k2s2(p, x):
    """A 2x2, stride-2 transposed convolution: every input pixel writes its own 2x2 block
    (no overlap), i.e. one contraction over input channels and a pixel shuffle."""
    b, _, h, w = x.shape
    c_out = p["w"].shape[1]
    y = jnp.einsum("bihw,iokl->bohkwl", x, p["w"]).reshape(b, c_out, 2 * h, 2 * w)
    return y + p["b"][None, :, None, None]


def max_pool2(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def layer_norm_params(n):
    return {"g": jnp.ones((n,), jnp.float32), "b": jnp.zeros((n,), jnp.float32)}


def layer_norm(p, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["g"] + p["b"]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy over all positions; class axis last."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)
    return -picked.mean()


def mse(pred, target):
    return ((pred - target) ** 2).mean()


# ---- optimizers, as torch.optim computes them ----


def sgd(lr):
    def init(params):
        return ()

    def update(params, grads, state):
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), state

    return init, update


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    """Adam (or AdamW with `decoupled`), bias-corrected as torch.optim.Adam/AdamW."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (jnp.zeros((), jnp.float32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(params, grads, state):
        t, m, v = state
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c1, c2 = 1 - b1**t, 1 - b2**t

        def step(p, m, v):
            if decoupled:
                p = p * (1 - lr * weight_decay)
            return p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps)

        return jax.tree.map(step, params, m, v), (t, m, v)

    return init, update


def train_step(loss_fn, optimizer, params, x, y):
    """A jitted step closing over nothing mutable: (params, state) in, (params, state) out,
    both donated. Returns a no-argument callable that runs one step and blocks on it."""
    init, update = optimizer

    def step(params, state, x, y):
        grads = jax.grad(loss_fn)(params, x, y)
        return update(params, grads, state)

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": params, "state": init(params)}

    def run():
        box["params"], box["state"] = step(box["params"], box["state"], x, y)
        jax.block_until_ready(box["params"])

    return run


# ---- models ----


def mlp_params(keys, sizes):
    return [linear_params(keys, a, b) for a, b in zip(sizes, sizes[1:])]


def mlp(params, x):
    for i, p in enumerate(params):
        if i > 0:
            x = jax.nn.relu(x)
        x = linear(p, x)
    return x


def lenet_params(keys):
    return {
        "c1": conv_params(keys, 1, 6, 5),
        "c2": conv_params(keys, 6, 16, 5),
        "fc": mlp_params(keys, [400, 120, 84, 10]),
    }


def lenet(params, x):
    x = max_pool2(jax.nn.relu(conv2d(params["c1"], x, 2)))
    x = max_pool2(jax.nn.relu(conv2d(params["c2"], x, 0)))
    x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["fc"][0]["w"].T + params["fc"][0]["b"])
    return mlp(params["fc"][1:], x)


def unet_params(keys, classes=11):
    def double(c_in, c_out):
        return [conv_params(keys, c_in, c_out, 3), conv_params(keys, c_out, c_out, 3)]

    return {
        "e1": double(1, 16),
        "e2": double(16, 32),
        "mid": double(32, 64),
        "up2": conv_transpose_params(keys, 64, 32, 2),
        "d2": double(64, 32),
        "up1": conv_transpose_params(keys, 32, 16, 2),
        "d1": double(32, 16),
        "head": conv_params(keys, 16, classes, 1),
    }


def unet(params, x):
    def double(ps, x):
        for p in ps:
            x = jax.nn.relu(conv2d(p, x, 1))
        return x

    e1 = double(params["e1"], x)
    e2 = double(params["e2"], max_pool2(e1))
    mid = double(params["mid"], max_pool2(e2))
    d2 = double(params["d2"], jnp.concatenate([conv_transpose2d_k2s2(params["up2"], mid), e2], 1))
    d1 = double(params["d1"], jnp.concatenate([conv_transpose2d_k2s2(params["up1"], d2), e1], 1))
    return conv2d(params["head"], d1, 0)


def gpt_params(keys, vocab=96, block_size=64, n_embd=128, n_layer=4):
    def block():
        return {
            "ln_1": layer_norm_params(n_embd),
            "c_attn": linear_params(keys, n_embd, 3 * n_embd),
            "c_proj": linear_params(keys, n_embd, n_embd),
            "ln_2": layer_norm_params(n_embd),
            "c_fc": linear_params(keys, n_embd, 4 * n_embd),
            "mlp_proj": linear_params(keys, 4 * n_embd, n_embd),
        }

    return {
        "wte": jax.random.normal(keys(), (vocab, n_embd), jnp.float32),
        "wpe": jax.random.normal(keys(), (block_size, n_embd), jnp.float32),
        "blocks": [block() for _ in range(n_layer)],
        "ln_f": layer_norm_params(n_embd),
        "head": linear_params(keys, n_embd, vocab, bias=False),
    }


def gpt(params, tokens, n_head=4):
    b, t = tokens.shape
    x = params["wte"][tokens] + params["wpe"][:t]
    c = x.shape[-1]
    mask = jnp.tril(jnp.ones((t, t), bool))
    for p in params["blocks"]:
        q, k, v = jnp.split(linear(p["c_attn"], layer_norm(p["ln_1"], x)), 3, axis=-1)
        q, k, v = (z.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3) for z in (q, k, v))
        scores = (q @ k.transpose(0, 1, 3, 2)) / (c // n_head) ** 0.5
        att = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        x = x + linear(p["c_proj"], y)
        h = jax.nn.gelu(linear(p["c_fc"], layer_norm(p["ln_2"], x)), approximate=False)
        x = x + linear(p["mlp_proj"], h)
    return linear(params["head"], layer_norm(params["ln_f"], x))


def lstm_params(keys, vocab=20000, dim=128, hidden=128, classes=3):
    bound = 1.0 / hidden**0.5
    emb = jax.random.normal(keys(), (vocab, dim), jnp.float32).at[0].set(0.0)
    return {
        "emb": emb,
        "w_ih": uniform(keys, (4 * hidden, dim), bound),
        "w_hh": uniform(keys, (4 * hidden, hidden), bound),
        "b_ih": uniform(keys, (4 * hidden,), bound),
        "b_hh": uniform(keys, (4 * hidden,), bound),
        "fc": linear_params(keys, hidden, classes),
    }


def lstm_sentiment(params, tokens):
    # padding_idx 0: the padding row is a constant zero, so it gets no gradient.
    emb = params["emb"].at[0].set(0.0)
    x = emb[tokens]  # [B, T, D]
    b = x.shape[0]
    hidden = params["w_hh"].shape[1]
    # The input projection of every step at once, then the recurrence over time.
    gates_x = x @ params["w_ih"].T + params["b_ih"] + params["b_hh"]  # [B, T, 4H]

    def cell(carry, gx):
        h, c = carry
        g = gx + h @ params["w_hh"].T
        i, f, gg, o = jnp.split(g, 4, axis=-1)  # PyTorch's gate order
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((b, hidden), jnp.float32)
    (h, _), _ = lax.scan(cell, (zeros, zeros), gates_x.transpose(1, 0, 2))
    return linear(params["fc"], h)


# ---- the workloads ----


def run_workloads(threads, filters, quick):
    def wanted(workload_id):
        return not filters or any(f in workload_id for f in filters)

    def counted(n):
        return -(-n // 10) if quick else n

    def run(workload_id, warmup, n, step):
        report(workload_id, threads, measure(warmup, counted(n), step))

    keys = Keys(0)
    data = Keys(1)

    def rand(shape):
        return jax.random.uniform(data(), shape, jnp.float32)

    def labels(shape, classes):
        return jax.random.randint(data(), shape, 0, classes)

    def supervised(model):
        return lambda params, x, y: cross_entropy(model(params, x), y)

    if wanted("W1"):
        x = rand((1000, 1)) * 2 - 1
        y = 3 * x + 2
        loss = lambda p, x, y: mse(linear(p, x), y)  # noqa: E731
        step = train_step(loss, sgd(0.01), linear_params(keys, 1, 1), x, y)
        run("W1 seed-linreg", 10, 1000, step)

    if wanted("W2") or wanted("W5"):
        params = mlp_params(keys, [784, 128, 64, 10])
        # W2's step donates (consumes) its parameters: W5 times a copy of the same model.
        inference_params = jax.tree.map(jnp.copy, params)
        if wanted("W2"):
            step = train_step(supervised(mlp), adam(1e-3), params, rand((64, 784)), labels((64,), 10))
            run("W2 mlp-small", 20, 300, step)
        if wanted("W5"):
            forward = jax.jit(mlp)
            x = rand((1, 784))
            run("W5 infer-mlp", 100, 5000, lambda: forward(inference_params, x).block_until_ready())

    if wanted("W3"):
        params = mlp_params(keys, [1024, 2048, 2048, 10])
        step = train_step(supervised(mlp), adam(1e-3), params, rand((256, 1024)), labels((256,), 10))
        run("W3 mlp-wide", 3, 20, step)

    if wanted("W4"):
        x, y = rand((64, 1, 28, 28)), labels((64,), 10)
        step = train_step(supervised(lenet), adam(1e-3), lenet_params(keys), x, y)
        run("W4 lenet", 10, 100, step)

    if wanted("W6"):
        x, y = labels((12, 64), 96), labels((12, 64), 96)
        opt = adam(1e-3, b2=0.99, weight_decay=0.1, decoupled=True)
        step = train_step(supervised(gpt), opt, gpt_params(keys), x, y)
        run("W6 char-gpt", 5, 50, step)

    if wanted("W7"):
        x, y = labels((64, 48), 20000), labels((64,), 3)
        step = train_step(supervised(lstm_sentiment), adam(1e-3), lstm_params(keys), x, y)
        run("W7 lstm-sentiment", 5, 50, step)

    if wanted("W8"):
        x, y = rand((16, 1, 64, 64)), labels((16, 64, 64), 11)
        # Per-pixel cross-entropy: the class axis moved last.
        loss = lambda p, x, y: cross_entropy(unet(p, x).transpose(0, 2, 3, 1), y)  # noqa: E731
        step = train_step(loss, adam(1e-3), unet_params(keys), x, y)
        run("W8 unet-segment", 3, 20, step)


def main(argv):
    quick = "--quick" in argv
    threads = None
    rest = []
    args = iter(argv)
    for a in args:
        if a == "--threads":
            threads = int(next(args))
        elif not a.startswith("--"):
            rest.append(a)
    if CHILD_THREADS is not None:
        run_workloads(CHILD_THREADS, rest, quick)
        return 0
    for t in (threads,) if threads else THREADS:
        env = dict(os.environ, **{CHILD_ENV: str(t)})
        code = subprocess.call([sys.executable, __file__, *argv], env=env)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
