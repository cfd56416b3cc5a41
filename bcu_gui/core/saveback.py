"""Give the cleansed model back in the form it came in, so it drops into the user's pipeline unchanged.

Beside ``cleansed.pt`` / ``.safetensors`` (plain state_dicts), a run writes ``original_form/<the file's own
name>`` holding the student the way the suspicious file held the teacher:

* a state_dict, bare or in a wrapper (``{'net': ...}``, Lightning's ``state_dict`` with its other entries):
  the same object with only the weights replaced, under the same key names, prefix (``module.``, ``model.``),
  order and dtypes;
* a BackdoorBench ``attack_result.pt``: the same dict with ``model`` replaced (its poisoned test images
  written back as the PIL images BackdoorBench pickled);
* safetensors: the same key names and header metadata;
* TorchScript: the student scripted again (traced when scripting fails), or, for a model we run as its own
  TorchScript, that ScriptModule with the new weights;
* a pickled whole module (trusted): the same object with the student module in its place.

Every file is written atomically; nothing the user owns is overwritten (the run folder is new).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import atomic
from . import untrusted
from .checkpoints import PickledImage, RawCheckpoint
from .runfolder.layout import ORIGINAL_FORM_FOLDER
from .scripted import ScriptedModel, leaf_copy


def save_original_form(model, student: nn.Module, run_dir: str | Path) -> tuple[list[Path], str | None]:
    """Write ``student`` in ``model``'s original form under ``run_dir/original_form``.

    ``model`` is the :class:`models.LoadedModel` the run started from. Returns the files written and a warning
    line when the original form could not be reproduced (the plain ``cleansed.*`` files are still there).
    """
    raw: RawCheckpoint | None = getattr(model, "raw", None)
    if raw is None:
        return [], None
    target = Path(run_dir) / ORIGINAL_FORM_FOLDER / raw.path.name
    try:  # a resumed run's folder came from someone: never write through a link planted in it
        untrusted.check_write_target(run_dir, target)
    except untrusted.UntrustedFileError as exc:
        return [], f"the cleansed model was not also saved in its original form: {exc}; use cleansed.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    student = student.to("cpu").eval()
    try:
        if raw.format == "safetensors":
            _save_safetensors(raw, student, target)
        elif raw.format == "torchscript" and raw.top is None:
            _save_torchscript(model, student, target)
        elif raw.format in ("module", "torchscript"):  # a whole module inside a torch.save file
            atomic.write_with(target, lambda tmp: torch.save(_replace(raw.top, raw.weights_path, student), tmp))
        else:
            weights = _weights_like(raw, student)
            top = _plain(_replace(raw.top, raw.weights_path, weights))
            atomic.write_with(target, lambda tmp: torch.save(top, tmp))
    except Exception as exc:  # never lose a run over this extra file
        return [], (f"could not also save the cleansed model in its original form ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); use cleansed.pt")
    return [target], None


def student_state(student: nn.Module) -> dict[str, torch.Tensor]:
    """The student's weights under the names the teacher's file used (a TorchScript wrapper's own prefix
    removed), on the CPU."""
    state = student.state_dict()
    if isinstance(student, ScriptedModel):
        state = {k[len("script."):]: v for k, v in state.items()}
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _weights_like(raw: RawCheckpoint, student: nn.Module) -> dict[str, Any]:
    """The original weights mapping with each tensor replaced by the student's (same keys, order, dtypes);
    entries that are not the model's tensors are kept as they were."""
    original = _follow(raw.top, raw.weights_path)
    new = student_state(student)
    out: dict[str, Any] = type(original)() if isinstance(original, dict) else {}
    for key, value in original.items():
        name = key[len(raw.prefix):] if isinstance(key, str) and key.startswith(raw.prefix) else key
        if isinstance(value, torch.Tensor) and name in new:
            tensor = new[name].to(value.dtype)
            out[key] = nn.Parameter(tensor, requires_grad=value.requires_grad) if isinstance(
                value, nn.Parameter) else tensor
        else:
            out[key] = value
    missing = set(new) - {k[len(raw.prefix):] for k in original if isinstance(k, str)}
    if missing:
        raise ValueError(f"the student has weights the file did not: {sorted(missing)[:3]}")
    return out


def _follow(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _replace(obj: Any, path: tuple, value: Any) -> Any:
    """A copy of the containers along ``path`` with the last one's entry set to ``value`` (the rest shared)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if not isinstance(obj, Mapping):
        raise TypeError(f"cannot follow key {head!r} into a {type(obj).__name__}")
    copy = type(obj)(obj) if isinstance(obj, dict) else dict(obj)
    copy[head] = _replace(obj[head], rest, value)
    return copy


def _plain(obj: Any, memo: dict[int, tuple[Any, Any]] | None = None) -> Any:
    """Turn the loader's :class:`PickledImage` records back into PIL images (as the file had them).

    An object the file referenced many times is converted once and stays shared (``memo``), so a file that
    holds one image 100,000 times is written back as one image, not decoded 100,000 times.
    """
    memo = {} if memo is None else memo
    seen = memo.get(id(obj))
    if seen is not None:
        return seen[1]
    if isinstance(obj, PickledImage):
        out: Any = obj.to_pil()
    elif isinstance(obj, dict):
        items = [(k, _plain(v, memo)) for k, v in obj.items()]
        if all(a is b for (_, a), b in zip(items, obj.values())):
            out = obj
        else:
            out = type(obj)()
            for k, v in items:
                out[k] = v
    elif isinstance(obj, (list, tuple)):
        converted = [_plain(v, memo) for v in obj]
        if all(a is b for a, b in zip(converted, obj)):
            out = obj
        else:
            out = type(obj)(converted) if isinstance(obj, list) else tuple(converted)
    else:
        return obj
    memo[id(obj)] = (obj, out)  # the original is kept alive with it, so its id cannot be reused meanwhile
    return out


def _save_safetensors(raw: RawCheckpoint, student: nn.Module, target: Path) -> None:
    from safetensors.torch import save_file

    original = raw.state_dict or {}
    state = {raw.prefix + k: v.to(original[k].dtype) if k in original else v
             for k, v in student_state(student).items()}
    header = {str(k): str(v) for k, v in raw.header.items()}
    atomic.write_with(target, lambda tmp: save_file(state, str(tmp), metadata=header or None))


def _save_torchscript(model, student: nn.Module, target: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        if isinstance(student, ScriptedModel):
            scripted = leaf_copy(student.script).eval()
        else:
            try:
                scripted = torch.jit.script(student)
            except Exception:
                size = model.input_size
                scripted = torch.jit.trace(student, torch.rand(1, 3, size, size), check_trace=False)
        atomic.write_with(target, lambda tmp: torch.jit.save(scripted, str(tmp)))
