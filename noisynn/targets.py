"""Which weights are analog: each weight's class (attention, mlp, head, embedding, other; its projection and block)
and the targets a noise setting selects (``--targets``, ``--blocks``, ``--digital``).

Names are read from the module tree (GPT-2, LLaMA/SmolLM/Gemma/Mistral, OPT, GPT-NeoX, Falcon, BLOOM); a tied output
head is untied first so that noise on the head leaves the embeddings clean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from torch import nn

from .errors import NoisyNNError
from .placements import check_names
from .spec import NoiseSpec, parse_targets

try:  # GPT-2 style layers store weights as (in, out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a hard dependency
    Conv1D = ()


_ATTENTION_PARTS = {"attn", "attention", "self_attn", "self_attention", "crossattention", "cross_attn"}


_MLP_PARTS = {"mlp", "feed_forward", "ffn", "ff", "feedforward", "block_sparse_moe", "experts"}


# Leaf names of projections in GPT-2, LLaMA/SmolLM/Gemma/Mistral, OPT, GPT-NeoX, Falcon, BLOOM.
_PROJECTION_OF_LEAF = {
    "q_proj": "q", "query": "q", "q": "q", "wq": "q",
    "k_proj": "k", "key": "k", "k": "k", "wk": "k",
    "v_proj": "v", "value": "v", "v": "v", "wv": "v",
    "o_proj": "o", "out_proj": "o", "wo": "o", "dense": "o",
    "c_attn": "qkv", "query_key_value": "qkv", "qkv_proj": "qkv", "wqkv": "qkv", "qkv": "qkv",
    "gate_proj": "gate", "w1": "gate",
    "up_proj": "up", "c_fc": "up", "fc1": "up", "dense_h_to_4h": "up", "w3": "up", "fc_in": "up",
    "down_proj": "down", "fc2": "down", "dense_4h_to_h": "down", "w2": "down", "fc_out": "down",
}


_MLP_LEAVES = {"gate_proj", "up_proj", "down_proj", "c_fc", "fc1", "fc2", "dense_h_to_4h", "dense_4h_to_h",
               "fc_in", "fc_out"}


@dataclass(frozen=True)
class WeightClass:
    """Where a weight sits: ``kind`` in KINDS, transformer ``block`` index, ``proj`` in PROJECTIONS."""

    kind: str
    block: int | None
    proj: str | None


def classify_weight(name: str, module: nn.Module | None = None, model: nn.Module | None = None) -> WeightClass:
    """Classify a module (by its dotted ``name``) as attention / mlp / head / embedding / other.

    Works by naming conventions shared by GPT-2 (``attn.c_attn``, ``mlp.c_proj``), LLaMA,
    SmolLM, Gemma, Mistral (``self_attn.q_proj``, ``mlp.down_proj``), OPT (``self_attn.out_proj``,
    ``fc1``/``fc2``) and GPT-NeoX (``attention.query_key_value``, ``mlp.dense_4h_to_h``).
    """
    parts = name.split(".")
    leaf = parts[-1] if parts else name
    block = next((int(p) for p in parts if p.isdigit()), None)
    if model is not None and module is not None:
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out_emb is not None and module is out_emb:
            return WeightClass("head", None, None)
    if leaf in ("lm_head", "embed_out", "output") and not isinstance(module, nn.Embedding):
        return WeightClass("head", None, None)
    if isinstance(module, nn.Embedding) or re.search(r"(embed|wte|wpe)", leaf):
        return WeightClass("embedding", None, None)
    in_attn = any(p in _ATTENTION_PARTS for p in parts[:-1])
    in_mlp = any(p in _MLP_PARTS for p in parts[:-1]) or leaf in _MLP_LEAVES
    if in_attn:
        proj = "o" if leaf == "c_proj" else _PROJECTION_OF_LEAF.get(leaf)
        return WeightClass("attention", block, proj)
    if in_mlp:
        proj = "down" if leaf == "c_proj" else _PROJECTION_OF_LEAF.get(leaf)
        if proj in ("q", "k", "v", "o", "qkv"):
            proj = None
        return WeightClass("mlp", block, proj)
    return WeightClass("other", block, None)


@dataclass
class Target:
    """One noised tensor: its parameter, class, and the axis that indexes output channels."""

    name: str  # parameter name, e.g. "model.layers.3.self_attn.q_proj.weight"
    param: nn.Parameter
    cls: WeightClass
    out_axis: int  # 0 for nn.Linear (out, in); 1 for GPT-2 Conv1D (in, out)

    @property
    def numel(self) -> int:
        return self.param.numel()


def is_tied(model: nn.Module) -> bool:
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return inp is not None and out is not None and out.weight is inp.weight


def untie_head(model: nn.Module) -> bool:
    """Give the output head its own copy of the tied embedding matrix; True if it was tied.

    With tied weights, noise on the head would also land in the input embeddings; untying
    first keeps the two independent (costs one extra copy of the vocabulary matrix).
    """
    if not is_tied(model):
        return False
    head = model.get_output_embeddings()
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    return True


def select_targets(model: nn.Module, targets: str | Sequence[str] = "blocks", blocks: Iterable[int] | None = None,
                   include_bias: bool = False, digital: Iterable[str] = ()) -> list[Target]:
    """The weights (and optionally biases) to noise, in module order.

    ``targets``: comma-separated kinds (attention, mlp, head, embedding, other), groups
    (blocks, all) or projections (q, k, v, o, qkv, gate, up, down); ``blocks`` restricts
    attention/mlp weights to those block indices. Unties a tied head/embedding pair when
    either is targeted. ``digital``: parameter names left out (a placement's digital tensors); each must
    be a parameter of the model.
    """
    kinds, projs = parse_targets(targets)
    digital = frozenset(digital)
    if digital:
        check_names(digital, (n for n, _ in model.named_parameters(remove_duplicate=False)))
    block_set = None if blocks is None else {int(b) for b in blocks}
    if kinds & {"head", "embedding"}:
        untie_head(model)
    found: list[Target] = []
    present: set[int] = set()  # blocks the model has (attention/mlp weights with a block index)
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            axis = 0
        elif isinstance(module, nn.Linear):
            axis = 0
        elif Conv1D and isinstance(module, Conv1D):
            axis = 1
        else:
            continue
        cls = classify_weight(mod_name, module, model)
        if isinstance(module, nn.Embedding) and cls.kind != "embedding":
            continue
        if cls.kind in ("attention", "mlp") and cls.block is not None:
            present.add(cls.block)
        if not (cls.kind in kinds or (cls.proj is not None and cls.proj in projs)):
            continue
        if block_set is not None and cls.kind in ("attention", "mlp") and cls.block not in block_set:
            continue
        if f"{mod_name}.weight" not in digital:
            found.append(Target(f"{mod_name}.weight", module.weight, cls, axis))
        if include_bias and getattr(module, "bias", None) is not None and f"{mod_name}.bias" not in digital:
            found.append(Target(f"{mod_name}.bias", module.bias, cls, 0))
    missing = sorted(block_set - present) if block_set is not None and present else []
    if missing:
        raise NoisyNNError(f"block {','.join(map(str, missing))} does not exist: this model has blocks "
                           f"{min(present)}-{max(present)}")
    if not found and digital:
        raise NoisyNNError(f"every tensor that targets '{targets}' select is digital in the placement; "
                           "nothing is left to noise")
    if not found:
        raise NoisyNNError(f"targets '{targets}' match no weights in {type(model).__name__}")
    return found


def count_blocks(model: nn.Module) -> int:
    """The model's number of transformer blocks: 1 + the largest block index of an attention or mlp layer (0: none),
    the depth a per-layer schedule (noisynn.noise.schedule) is spread over, whatever ``--blocks`` selects."""
    found = -1
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (Conv1D and isinstance(module, Conv1D)):
            cls = classify_weight(mod_name, module, model)
            if cls.kind in ("attention", "mlp") and cls.block is not None:
                found = max(found, cls.block)
    return found + 1


def scheduled_block(t: Target) -> int | None:
    """The block whose schedule multiplier target ``t`` takes: attention and mlp weights' block; None (multiplier
    1) for the head, the embeddings and other weights."""
    return t.cls.block if t.cls.kind in ("attention", "mlp") else None


def select(model: nn.Module, spec: NoiseSpec) -> list[Target]:
    """``select_targets`` for a spec's targets, blocks, biases and digital tensors."""
    return select_targets(model, spec.targets, spec.blocks, spec.include_bias, spec.digital)


def original_targets(model: nn.Module, blocks: Iterable[int] | None = None, include_bias: bool = True) -> list[Target]:
    """What the original toolkit's ``inject_thermal_noise`` noised: every ``nn.Linear`` and GPT-2
    ``Conv1D`` weight and bias, the output head included (untied first, so the embeddings stay clean).

    ``"all,embedding"`` reaches every Linear/Conv1D whatever its name suggests; the
    ``nn.Embedding`` tables that brings in are dropped again.
    """
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found = select_targets(model, "all,embedding", blocks, include_bias)
    return [t for t in found if id(t.param) not in tables]
