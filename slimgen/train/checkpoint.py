"""Training checkpoints as safetensors + JSON (no pickle): modules, optimizers, epoch, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimgen.errors import ModelFolderError
from slimgen.io import read_json, write_atomic, write_json

STATE, META = "state.safetensors", "state.json"


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: str | Path, *, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
    epoch: int, history: list[dict[str, float]], extra: dict[str, Any] | None = None,
) -> None:
    """Write the state after ``epoch`` finished epochs; both files are replaced atomically, weights first."""
    folder = Path(folder)
    tensors = {f"module.{n}.{k}": v.detach().cpu().contiguous() for n, m in modules.items() for k, v in m.state_dict().items()}
    opt_meta = {}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(f"optim.{name}", opt)
        tensors.update(t)
        opt_meta[name] = m
    tag = f"epoch-{epoch}"
    write_atomic(folder / STATE, lambda p: save_file(tensors, str(p), metadata={"tag": tag}))
    write_json(folder / META, {"epoch": epoch, "tag": tag, "history": history, "optimizers": opt_meta, "extra": extra or {}})


def load_checkpoint(
    folder: str | Path, *, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore modules and optimizers in place; returns the JSON metadata (epoch, history, extra)."""
    folder = Path(folder)
    meta = read_json(folder / META)
    try:
        tensors = load_file(str(folder / STATE))
    except Exception as exc:
        raise ModelFolderError(f"{folder / STATE}: unreadable checkpoint ({exc})") from exc
    from safetensors import safe_open

    with safe_open(str(folder / STATE), "pt") as f:
        tag = (f.metadata() or {}).get("tag")
    if tag != meta.get("tag"):
        raise ModelFolderError(f"{folder}: {STATE} ({tag}) and {META} ({meta.get('tag')}) are from different epochs")
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFolderError(f"{folder}: checkpoint does not match the model being trained ({exc})") from exc
    for name, opt in optimizers.items():
        _restore_optimizer(f"optim.{name}", opt, tensors, meta["optimizers"][name])
    return meta


def has_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / STATE).is_file() and (folder / META).is_file()
