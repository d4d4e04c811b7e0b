"""The trained tensors of a run folder: save, read, copy into a model, rebuild a fine-tuned model."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import NoisyNNError
from ...targets import untie_head
from ...runs.files import read_saved, write_via_temp
from ...runs.read import read_run

WEIGHTS = "{variant}.safetensors"  # only the trained tensors (the targeted projections), float32


def save_weights(path: Path, tensors: dict, metadata: dict) -> None:
    """Atomically write the trained tensors as safetensors (metadata values become strings); on a failure (a full
    disk) no temporary file stays (``write_via_temp``)."""
    from safetensors.torch import save

    data = save({k: v.contiguous().cpu() for k, v in tensors.items()}, metadata={k: str(v) for k, v in metadata.items()})
    write_via_temp(path, lambda fh: fh.write(data))


def read_weights(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a saved file; a damaged or truncated one is one NoisyNNError line (``read_saved``)."""
    return read_saved(path, _read_safetensors, "remove it: a rerun of the same command trains that variant again")


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    tensors, meta = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    return tensors, meta


@torch.no_grad()
def set_weights(model, tensors: dict) -> None:
    """Copy named tensors into ``model`` (unties a tied head first if the head is among them)."""
    params = dict(model.named_parameters())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and any(params.get(k) is head.weight for k in tensors):
        untie_head(model)
        params = dict(model.named_parameters())
    missing = [k for k in tensors if k not in params]
    if missing:
        raise NoisyNNError(f"the saved weights name tensors the model lacks: {missing[:3]}")
    for k, v in tensors.items():
        if params[k].shape != v.shape:
            raise NoisyNNError(f"saved tensor {k} has shape {tuple(v.shape)}, the model's is {tuple(params[k].shape)}")
        params[k].data.copy_(v.to(params[k].dtype))


def load_finetuned(run_dir: str | Path, variant: str = "finetuned", device: str = "cpu", dtype: str | None = None):
    """The fine-tuned model of a run folder: its base model (from run.json) with the saved tensors copied in.

    The run folder stores only the trained tensors (``finetuned.safetensors``, and
    ``control.safetensors`` for the no-noise control); the base is loaded with ``load_model``
    and its fingerprint checked against the one recorded in run.json.
    """
    from ...models.loading import load_model

    run_dir = Path(run_dir)
    meta = read_run(run_dir).meta
    path = run_dir / WEIGHTS.format(variant=variant)
    if not path.is_file():
        raise NoisyNNError(f"{path} does not exist (weights are saved only with --save_weights, and never "
                           "committed; rerun the experiment with --save_weights)")
    lm = load_model(meta["config"]["model"], device, dtype or meta["config"].get("dtype"))
    want = meta.get("model", {}).get("fingerprint")
    if want and lm.info.get("fingerprint") and want != lm.info["fingerprint"]:
        raise NoisyNNError(f"the base model's fingerprint differs from the one in {run_dir / 'run.json'}")
    tensors, _ = read_weights(path)
    set_weights(lm.model, tensors)
    lm.info.update(finetuned_from=str(path))
    return lm

