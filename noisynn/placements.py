"""placement.json: which tensors of a model are analog and which stay digital (read, check, write; no torch).

Written by the placement planner (``noisynn placement``) and read by ``--digital placement.json`` on the
sweep: the tensors it names digital are left out of the noise targets (and so get no converters either),
so they stay bit-exactly clean. Format (a JSON object; only ``tensors`` or ``digital`` is required):

    {"format": "noisynn-placement/1",
     "tensors": {"model.layers.0.self_attn.q_proj.weight": "digital", ...: "analog"},   # every candidate
     "digital": [...], "analog": [...],     # the same names, as two sorted lists
     ...provenance: model, noise setting, tolerance, the verification that accepted it...}

A hand-written file may give only ``{"digital": [names]}``. Names are parameter names as
``model.named_parameters()`` gives them; one the model lacks is an error (``targets.select_targets``). A file
that records the ``model_fingerprint`` it was planned on is refused for other weights (``check_planned_on``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .errors import NoisyNNError
from .runs.files import write_json_atomic
from .paths import readable_file

FORMAT = "noisynn-placement/1"
STATES = ("analog", "digital")


def read_digital(path: str | Path) -> frozenset[str]:
    """The tensor names a placement file marks digital; NoisyNNError (one line) for a file that is not one."""
    p = readable_file(path, "placement file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NoisyNNError(f"placement file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise NoisyNNError(f"placement file {path} line {err.lineno}: not JSON ({err.msg})") from None
    if not isinstance(data, dict) or not ("tensors" in data or "digital" in data):
        raise NoisyNNError(f"placement file {path} is not a placement: a JSON object with 'tensors' "
                           "({name: analog|digital}) or 'digital' ([names]) is expected")
    if "tensors" in data:
        tensors = data["tensors"]
        if not isinstance(tensors, dict) or not all(isinstance(k, str) and v in STATES for k, v in tensors.items()):
            raise NoisyNNError(f"placement file {path}: 'tensors' must map tensor names to 'analog' or 'digital'")
        digital = {k for k, v in tensors.items() if v == "digital"}
        listed = data.get("digital")
        if listed is not None and set(listed) != digital:
            raise NoisyNNError(f"placement file {path}: its 'digital' list and its 'tensors' map disagree")
        return frozenset(digital)
    names = data["digital"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise NoisyNNError(f"placement file {path}: 'digital' must be a list of tensor names")
    return frozenset(names)


def check_planned_on(path: str | Path, model: dict) -> None:
    """Refuse a placement planned on other weights than ``model`` (a LoadedModel's info): its recorded
    ``model_fingerprint`` differs from the model's. A file that records none (written by hand), or one of another
    kind (a hub commit against a sha256), passes."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # read_digital has said what is wrong with it
    planned, now = data.get("model_fingerprint") if isinstance(data, dict) else None, model.get("fingerprint")
    if isinstance(planned, str) and planned and now and planned != now and len(planned) == len(str(now)):
        raise NoisyNNError(f"placement file {path} was planned on other weights (model {data.get('model')}, fingerprint "
                           f"{planned[:12]}...) than --model {model.get('name')} ({str(now)[:12]}...); plan again on "
                           "this model, or delete its model_fingerprint to use it anyway")


def check_names(digital: Iterable[str], present: Iterable[str], source: str = "the placement") -> None:
    """Every digital name must be a tensor of the model; else one line naming the first few that are not."""
    missing = sorted(set(digital) - set(present))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise NoisyNNError(f"{source} names {len(missing)} tensor(s) this model does not have: {shown}")


def write_placement(path: str | Path, analog: Iterable[str], digital: Iterable[str], **provenance) -> Path:
    """Write placement.json (atomically): every candidate tensor as analog or digital, plus ``provenance``."""
    analog, digital = sorted(set(analog)), sorted(set(digital))
    both = set(analog) & set(digital)
    if both:
        raise ValueError(f"tensors both analog and digital: {sorted(both)[:3]}")
    tensors = {name: "analog" for name in analog} | {name: "digital" for name in digital}
    data = {"format": FORMAT, **provenance, "tensors": dict(sorted(tensors.items())), "digital": digital,
            "analog": analog}
    write_json_atomic(Path(path), data)
    return Path(path)
