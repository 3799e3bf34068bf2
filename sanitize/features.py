"""Penultimate-layer features, extracted once per run in batches and stored keyed by ``sample_id``.

The package's models are read through a forward hook on the feature layer. TorchScript models do
not support hooks; for those the named layer must be a top-level child of a model whose forward
is its children applied in order (checked on a batch), or an exported method of that name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from sanitize.errors import InputError
from sanitize.models import pick_device, to_tensor
from sanitize.store import Manifest, Store, TableWriter, decode_pixels


def feature_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("prediction", pa.int64(), nullable=False),
            pa.field("features", pa.list_(pa.float32(), dim), nullable=False),
        ],
        metadata={"sanitize.table": "features"},
    )


def feature_function(model: nn.Module, layer: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A function ``x -> (features (B, d), logits (B, classes))`` for ``model``'s layer ``layer``."""
    if isinstance(model, torch.jit.ScriptModule):
        return _script_feature_function(model, layer)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise InputError(f"model has no layer {layer!r}; layers: {', '.join(n for n in modules if n)[:400]}")
    captured: list[torch.Tensor] = []
    modules[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured.clear()
        logits = model(x)
        if not captured:
            raise InputError(f"layer {layer!r} did not run in the model's forward pass")
        return captured[-1].flatten(1), logits

    return run


def _script_feature_function(
    model: torch.jit.ScriptModule, layer: str
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    if (
        hasattr(model, layer)
        and callable(getattr(model, layer))
        and not isinstance(getattr(model, layer), torch.nn.Module)
    ):
        method = getattr(model, layer)
        return lambda x: (method(x).flatten(1), model(x))
    children = list(model.named_children())
    names = [n for n, _ in children]
    if layer not in names:
        raise InputError(
            f"TorchScript model: {layer!r} is not a top-level layer or exported method; top-level layers: {names}"
        )
    stop = names.index(layer)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        feat = x
        for i, (_, child) in enumerate(children):
            h = child(h)
            if i == stop:
                feat = h
        return feat.flatten(1), h

    checked: list[bool] = []

    def checked_run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat, chained = run(x)
        if not checked:
            if not torch.allclose(chained, model(x), atol=1e-4, rtol=1e-3):
                raise InputError(
                    f"TorchScript model: applying its top-level layers {names} in order does not "
                    f"reproduce its output, so layer {layer!r} cannot be read; export a method "
                    f"named {layer!r} that returns the features instead"
                )
            checked.append(True)
        return feat, chained

    return checked_run


@torch.no_grad()
def extract_features(
    model: nn.Module,
    layer: str,
    store: Store,
    manifest: Manifest,
    out: Path,
    *,
    batch_size: int = 512,
    device: str = "auto",
    progress: bool = True,
    batches: Iterator[pa.RecordBatch] | None = None,
    total: int | None = None,
) -> Path:
    """Stream a version's samples through ``model`` and write ``out`` (features keyed by sample_id).

    The features file has columns ``sample_id``, ``split``, ``label``, ``prediction`` and
    ``features`` (fixed-size list of float32). Features that are NaN or infinite raise, naming the
    first bad sample.
    """
    from tqdm.auto import tqdm

    dev = pick_device(device)
    model = model.to(dev).eval()
    run = feature_function(model, layer)
    cols = ["sample_id", "split", "label", "height", "width", "channels", "pixels"]
    stream = batches if batches is not None else store.iter_samples(manifest, columns=cols, batch_size=batch_size)
    writer: TableWriter | None = None
    n_total = total if total is not None else manifest.n_train + manifest.n_test
    try:
        with tqdm(total=n_total, desc="features", unit="img", disable=not progress, leave=False) as bar:
            for batch in stream:
                feats, logits = run(to_tensor(decode_pixels(batch)).to(dev))
                f = feats.float().cpu().numpy()
                bad = ~np.isfinite(f).all(axis=1)
                if bad.any():
                    sid = batch.column("sample_id")[int(np.argmax(bad))].as_py()
                    raise InputError(
                        f"the model gave NaN or infinite features for sample {sid} ({int(bad.sum())} in its batch)"
                    )
                if writer is None:
                    writer = TableWriter(out, feature_schema(f.shape[1]))
                assert writer is not None
                writer.write(
                    pa.table(
                        {
                            "sample_id": batch.column("sample_id"),
                            "split": batch.column("split"),
                            "label": batch.column("label"),
                            "prediction": pa.array(logits.argmax(1).cpu().numpy(), pa.int64()),
                            "features": pa.FixedSizeListArray.from_arrays(
                                pa.array(f.ravel(), pa.float32()), f.shape[1]
                            ),
                        },
                        schema=feature_schema(f.shape[1]),
                    )
                )
                bar.update(batch.num_rows)
        if writer is None:
            raise InputError(f"version {manifest.version_id} has no samples to extract features from")
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def load_features(path: Path, split: str | None = "train") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Read a features file: (sample_ids, features (n, d) float32, labels (n,), predictions (n,))."""
    table = pq.read_table(path)
    if split is not None:
        table = table.filter(pa.compute.equal(table.column("split"), split))
    col = table.column("features").combine_chunks()
    dim = col.type.list_size
    feats = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    return (
        table.column("sample_id").to_pylist(),
        feats,
        table.column("label").to_numpy(),
        table.column("prediction").to_numpy(),
    )


def load_inputs(store: Store, manifest: Manifest, sample_ids: list[str], max_dims: int = 1024) -> np.ndarray:
    """The raw training inputs of ``sample_ids``, in that order: (n, d) float32 in [0, 1].

    Images whose ``height * width * channels`` exceeds ``max_dims`` are average-pooled over square
    blocks (the smallest block that fits; rows and columns left over at the bottom and right are
    dropped), so input-space detectors see every image at one modest size.
    """
    h, w, c = manifest.height, manifest.width, manifest.channels
    block = 1
    while (h // block) * (w // block) * c > max_dims:
        block += 1
    oh, ow = h // block, w // block
    where = {sid: i for i, sid in enumerate(sample_ids)}
    out = np.empty((len(sample_ids), oh * ow * c), dtype=np.float32)
    seen = np.zeros(len(sample_ids), dtype=bool)
    for rows, pixels in _train_images(store, manifest, where):
        x = pixels.astype(np.float32) / 255.0
        if block > 1:
            x = x[:, : oh * block, : ow * block, :].reshape(len(x), oh, block, ow, block, c).mean(axis=(2, 4))
        out[rows] = x.reshape(len(x), -1)
        seen[rows] = True
    if not seen.all():
        missing = sample_ids[int(np.argmin(seen))]
        raise InputError(f"sample {missing} has features but is not in version {manifest.version_id}")
    return out


def _train_images(store: Store, manifest: Manifest, where: dict[str, int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The version's training images in batches: (their rows in ``where``, (B, H, W, C) uint8). A
    sample of the version that ``where`` does not hold is an error."""
    cols = ["sample_id", "height", "width", "channels", "pixels"]
    for batch in store.iter_samples(manifest, split="train", columns=cols, batch_size=4096):
        rows = np.array([where.get(s, -1) for s in batch.column("sample_id").to_pylist()], dtype=np.int64)
        if (rows < 0).any():
            sid = batch.column("sample_id")[int(np.argmax(rows < 0))].as_py()
            raise InputError(f"sample {sid} of version {manifest.version_id} has no features in this run")
        yield rows, decode_pixels(batch)


def load_sources(store: Store, manifest: Manifest, sample_ids: list[str]) -> np.ndarray:
    """The source (supplier) of each of ``sample_ids``, in that order: (n,) object array of str."""
    where = {sid: i for i, sid in enumerate(sample_ids)}
    out = np.empty(len(sample_ids), dtype=object)
    for batch in store.iter_samples(manifest, split="train", columns=["sample_id", "source"], batch_size=65536):
        for sid, src in zip(batch.column("sample_id").to_pylist(), batch.column("source").to_pylist(), strict=True):
            i = where.get(sid)
            if i is None:
                raise InputError(f"sample {sid} of version {manifest.version_id} has no features in this run")
            out[i] = src
    missing = [sample_ids[i] for i in np.flatnonzero(out == None)]  # noqa: E711 (an object array)
    if missing:
        raise InputError(f"{len(missing)} samples of this run are not in version {manifest.version_id}: {missing[:3]}")
    return out


#: Largest set of training images a :class:`StoredResponder` keeps in memory (bytes); above it,
#: each request reads the store again.
RESPONDER_CACHE_BYTES = 512 * 2**20


class StoredResponder:
    """The reference model's response to the run's training images (a
    :class:`~sanitize.detect._response.Responder`): images read from the store by row of
    ``sample_ids``, predictions from ``model`` (its logits' arg max) in batches."""

    def __init__(
        self, model: nn.Module, store: Store, manifest: Manifest, sample_ids: list[str], *, device: str = "auto"
    ):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.store, self.manifest = store, manifest
        self.where = {sid: i for i, sid in enumerate(sample_ids)}
        self.n = len(sample_ids)
        self._all: np.ndarray | None = None
        size = self.n * manifest.height * manifest.width * manifest.channels
        self._cache = size <= RESPONDER_CACHE_BYTES

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The training images at ``rows`` (m, H, W, C) uint8, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._all is not None:
            return self._all[rows]
        wanted = np.arange(self.n) if self._cache else rows
        pos = np.full(self.n, -1, dtype=np.int64)
        pos[wanted] = np.arange(len(wanted))
        out: np.ndarray | None = None
        for at, x in _train_images(self.store, self.manifest, self.where):
            take = pos[at] >= 0
            if not take.any():
                continue
            if out is None:
                out = np.zeros((len(wanted), *x.shape[1:]), dtype=np.uint8)
            out[pos[at[take]]] = x[take]
        if out is None:
            raise InputError(
                f"version {self.manifest.version_id} holds none of the {len(rows)} training rows asked for"
            )
        if self._cache:
            self._all = out
            return out[rows]
        return out

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The model's predicted class (m,) for (m, H, W, C) uint8 images."""
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                logits = self.model(to_tensor(images[i : i + batch_size]).to(self.device))
                out.append(logits.argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
