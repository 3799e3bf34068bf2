"""A training job that trains only on reviewed data: a dataset's latest *approved* clean version.

It reads the version with :class:`sanitize.data.CleanDataset` (a plain ``torch.utils.data.Dataset``),
trains the package's small CNN with an ordinary PyTorch loop, measures it on the version's test
split, and records which version it trained on: ``MODEL.lineage.json`` beside the model, and a
``model.train`` record in the catalog that ``sanitize lineage VERSION`` shows.

    sanitize run                                      # clean the digits demo
    sanitize quarantine list --run latest             # review: confirm poisons, release the rest
    python examples/train_on_approved.py --dataset digits-demo --out model.pt

It refuses to train when the dataset has no approved version (review its quarantine first).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sanitize.data import CleanDataset
from sanitize.errors import SanitizeError
from sanitize.lineage import record_training
from sanitize.models import build_model, default_architecture, save_torchscript
from sanitize.workspace import Workspace


def accuracy(model: torch.nn.Module, data: CleanDataset) -> float | None:
    if len(data) == 0:
        return None
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=512):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits-demo", help="dataset name (default: the digits demo)")
    ap.add_argument("--out", type=Path, default=Path("model.pt"), help="where the TorchScript model goes")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train_set = CleanDataset(args.dataset, version="approved", split="train")
    test_set = CleanDataset(train_set.version, split="test")
    m = train_set.manifest
    print(f"training on {train_set.dataset} version {train_set.version} (approved): {len(train_set)} samples")

    torch.manual_seed(args.seed)
    arch = default_architecture(m.height, m.width, m.channels)
    model = build_model(arch, in_channels=m.channels, n_classes=max(m.classes) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(train_set):.4f}")
    seconds = time.perf_counter() - started
    test_acc = accuracy(model, test_set)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_torchscript(model, args.out, np.stack([train_set.image(0), train_set.image(1)]))
    record = record_training(
        Workspace(),
        train_set.version,
        args.out,
        job="examples/train_on_approved.py",
        details={
            "arch": arch,
            "epochs": args.epochs,
            "n_train": len(train_set),
            "test_accuracy": test_acc,
            "seconds": round(seconds, 2),
        },
    )
    print(json.dumps({k: v for k, v in record.items() if k != "run_config"}, indent=2))
    return record


if __name__ == "__main__":
    try:
        main()
    except SanitizeError as exc:
        raise SystemExit(f"error: {exc}") from None
