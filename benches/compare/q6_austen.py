#!/usr/bin/env python3
"""Q6 side by side: the character GPT on Jane Austen, trained by kiln and by PyTorch.

The recipe is Q6 of the workloads: W6's model (vocabulary = the distinct characters), the novels
of `examples/data/austen.tsv.gz` joined with `\\n` in file order (first 90% of characters train,
the last 10% validate), 2,000 iterations of 12 random 64-character windows, AdamW lr 1e-3 (100
linear warm-up iterations from 1% of the peak, cosine decay to 1e-4 at iteration 2,000), betas
(0.9, 0.99), weight decay 0.1 on matrices and embedding tables only, gradient-norm clipping at
1.0. Reported: the validation loss (mean cross-entropy per character over 200 random validation
windows) and the training wall time (steps only, no periodic validation).

Usage: python3 benches/compare/q6_austen.py [--iterations N] [--threads T] [--skip-kiln]
                                              [--skip-pytorch] [--isa avx2]

`--isa avx2` holds both sides to AVX2 on an AVX-512 machine (see isa.py).

kiln's side is `cargo run --release --example austen -- --iterations N` (its output is parsed);
PyTorch's side runs in this process and needs torch. Each side prints its progress live, then
one table:

    system | validation loss | training s | ms/iteration
"""

import argparse
import csv
import gzip
import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import isa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DATA = REPO / "examples" / "data" / "austen.tsv.gz"

BATCH, BLOCK = 12, 64
LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100
EVAL_WINDOWS = 200

KILN_LOSS = re.compile(r"final validation loss (?P<loss>[0-9.]+)")
KILN_TIME = re.compile(r"training: (?P<seconds>[0-9.]+) s in steps")


def load_text():
    """The novels' lines joined with newlines, in file order (the TSV's `line` column)."""
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return "\n".join(row["line"] for row in rows)


def learning_rate(step, iterations):
    """kiln's LinearWarmup(100, from 1%) then CosineAnnealing to MIN_LR, per step."""
    if step < WARMUP:
        return LR * (0.01 + 0.99 * step / WARMUP)
    progress = (step - WARMUP) / max(1, iterations - WARMUP)
    return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def run_pytorch(iterations, threads):
    import torch

    spec = importlib.util.spec_from_file_location("workloads", HERE / "pytorch_workloads.py")
    workloads = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workloads)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    text = load_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, validation = data[:split], data[split:]
    print(f"PyTorch {torch.__version__}, {threads} threads; {len(data)} characters, "
          f"{len(chars)} distinct", flush=True)

    def windows(stream, rows, generator):
        starts = torch.randint(0, len(stream) - BLOCK - 1, (rows,), generator=generator)
        x = torch.stack([stream[s:s + BLOCK] for s in starts.tolist()])
        y = torch.stack([stream[s + 1:s + BLOCK + 1] for s in starts.tolist()])
        return x, y

    model = workloads.CharGpt(vocab=len(chars))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.99))
    ce = torch.nn.functional.cross_entropy
    generator = torch.Generator().manual_seed(1)
    train_seconds = 0.0
    for step in range(iterations):
        start = time.perf_counter()
        x, y = windows(train, BATCH, generator)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, iterations)
        logits = model(x)
        loss = ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_seconds += time.perf_counter() - start
        if (step + 1) % 100 == 0 or step + 1 == iterations:
            print(f"step {step + 1:>5}  train {loss.item():.4f}  ({train_seconds:.1f} s)",
                  flush=True)

    model.eval()
    eval_generator = torch.Generator().manual_seed(2)
    total = 0.0
    with torch.no_grad():
        for _ in range(EVAL_WINDOWS // 20):
            x, y = windows(validation, 20, eval_generator)
            logits = model(x)
            total += ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item() * 20
    return total / EVAL_WINDOWS, train_seconds


def run_kiln(iterations, threads):
    cmd = ["cargo", "run", "--release", "--example", "austen", "--",
           "--iterations", str(iterations), "--chars", "0"]
    print("== kiln: " + " ".join(cmd), flush=True)
    env = dict(os.environ, KILN_THREADS=str(threads))
    lines = []
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            print("   " + line, end="", flush=True)
            lines.append(line)
    if proc.returncode != 0:
        sys.exit(f"kiln's example failed with exit code {proc.returncode}")
    output = "".join(lines)
    loss, seconds = KILN_LOSS.search(output), KILN_TIME.search(output)
    if not loss or not seconds:
        sys.exit("could not find the final validation loss and training time in kiln's output")
    return float(loss["loss"]), float(seconds["seconds"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-kiln", action="store_true")
    parser.add_argument("--skip-pytorch", action="store_true")
    parser.add_argument("--isa", choices=sorted(isa.CAPS), help="cap both sides at this ISA")
    args = parser.parse_args()
    # Before torch is imported and kiln started: both read the caps when they load.
    capped = isa.cap(args.isa) if args.isa else None

    results = []
    if not args.skip_kiln:
        results.append(("kiln",) + run_kiln(args.iterations, args.threads))
    if not args.skip_pytorch:
        results.append(("PyTorch",) + run_pytorch(args.iterations, args.threads))

    print(f"\nQ6, {args.iterations} iterations, {args.threads} threads"
          + (f"; {capped}" if capped else ""))
    print(f"{'system':<8} | validation loss | training s | ms/iteration")
    for name, loss, seconds in results:
        print(f"{name:<8} | {loss:>15.4f} | {seconds:>10.1f} | "
              f"{1e3 * seconds / max(1, args.iterations):>12.1f}")


if __name__ == "__main__":
    main()
