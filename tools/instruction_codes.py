"""Is the instruction embedding what Stage 1 cannot read? (docs/results.md, Stage 1; a DIAGNOSTIC)

    .venv/bin/python tools/instruction_codes.py IN_TABLE OUT_TABLE

IN_TABLE is a ``train-sft`` instruction table (``CACHE/instructions.npz``, MiniLM embeddings). The
script prints how alike MiniLM finds instructions that differ only in their roles (the cosine of
the two embeddings), then writes OUT_TABLE: every instruction of the embedded table as a clean
code instead, one-hot(target colour) + one-hot(goal) in the first dimensions of a vector of the
same size, parsed from the table's templates ("<verb> the <colour> block to the <goal>").

That parse is privileged knowledge of one simulator's instruction templates: the table is for an
experiment that asks whether a perfectly legible instruction would help BC, never for a product
path. Train with it by giving ``train-sft`` a ``--cache-dir`` that holds OUT_TABLE as
``instructions.npz`` next to the demos' feature cache entry.
"""
from __future__ import annotations

import re
import sys

import numpy as np

TEMPLATE = re.compile(r"^(\w+) the (\w+) block to the (.+)$")


def clean_codes(instructions: list[str], dim: int) -> np.ndarray:
    """(n, dim) float32: 1/sqrt(2) at the target colour's and at the goal's one-hot slot."""
    parsed = []
    for text in instructions:
        m = TEMPLATE.match(text)
        if m is None:
            raise SystemExit(f"{text!r} does not follow the embedded table's template: this diagnostic cannot code it")
        parsed.append(m.groups())
    targets, goals = sorted({p[1] for p in parsed}), sorted({p[2] for p in parsed})
    if len(targets) + len(goals) > dim:
        raise SystemExit(f"{len(targets)} targets + {len(goals)} goals do not fit {dim} dimensions")
    codes = np.zeros((len(instructions), dim), np.float32)
    for i, (_, target, goal) in enumerate(parsed):
        codes[i, targets.index(target)] = codes[i, len(targets) + goals.index(goal)] = 1 / np.sqrt(2)
    return codes


def main(argv: list[str]) -> int:
    from efm_ros.model.text import InstructionTable

    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    table = InstructionTable.load(argv[0])
    texts = sorted(table)
    emb = table.lookup(texts)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    row = {t: i for i, t in enumerate(texts)}
    swapped = []
    for t in texts:   # the same words with the two blocks' roles exchanged
        m = TEMPLATE.match(t)
        if m and m.group(3).endswith(" block"):
            other = f"{m.group(1)} the {m.group(3)[:-6]} block to the {m.group(2)} block"
            if other in row and row[other] > row[t]:
                swapped.append(float(unit[row[t]] @ unit[row[other]]))
    sims = unit @ unit.T
    np.fill_diagonal(sims, np.nan)
    print(f"{len(texts)} instructions; MiniLM cosine between two instructions: mean {np.nanmean(sims):.3f}; "
          f"with the two blocks' roles swapped: mean {np.mean(swapped):.4f}, min {np.min(swapped):.4f} "
          f"({len(swapped)} pairs)" if swapped else f"{len(texts)} instructions; no role-swapped pairs")
    InstructionTable(dict(zip(texts, clean_codes(texts, table.dim)))).save(argv[1])
    print(f"wrote the clean codes -> {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
