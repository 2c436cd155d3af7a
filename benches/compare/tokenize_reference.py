#!/usr/bin/env python3
"""The `tokenizers` library on the lines `cargo bench --bench tokenize` encodes: every line of
Austen's novels, one `encode` call per line, one thread, best of three passes.

Usage: python3 benches/compare/tokenize_reference.py [FILTER ...]  (needs `pip install tokenizers`)
"""

import gzip
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
NAMES = [
    "gpt2_bpe",
    "llama3_bpe",
    "o200k_bpe",
    "deepseek_bpe",
    "llama_bpe",
    "bert_wordpiece",
    "t5_unigram",
    "xlmr_unigram",
    "wordlevel",
]


def main():
    filters = sys.argv[1:]
    with gzip.open(REPO / "examples" / "data" / "austen.tsv.gz", "rt", encoding="utf-8") as f:
        next(f)
        lines = [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]
    size = sum(len(line.encode("utf-8")) for line in lines)
    print(f"{len(lines)} lines, {size / 1e6:.1f} MB; best of 3 passes, one thread\n")
    print("| tokenizer | MB/s | M tokens/s | tokens |")
    print("|---|---:|---:|---:|")
    for name in NAMES:
        if filters and not any(f in name for f in filters):
            continue
        tok = Tokenizer.from_file(str(REPO / "tests" / "fixtures" / "tokenizers" / name / "tokenizer.json"))
        best = float("inf")
        tokens = 0
        for _ in range(3):
            start = time.perf_counter()
            tokens = sum(len(tok.encode(line, add_special_tokens=False).ids) for line in lines)
            best = min(best, time.perf_counter() - start)
        print(f"| {name} | {size / 1e6 / best:.1f} | {tokens / 1e6 / best:.2f} | {tokens} |")


if __name__ == "__main__":
    main()
