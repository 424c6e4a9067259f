"""Cascading model randomisation for the sanity check (Adebayo et al., NeurIPS 2018).

Every parameter tensor of a CLIP's two towers is placed in one group, read from
``named_parameters`` so that no tensor can be forgotten (an unplaced name is an error):

- image tower, top down: projection and final norm; blocks L..1; ``ln_pre``; positional and class
  embeddings; the patch embedding / convolutional stem;
- text tower, top down: projection and final norm; blocks L..1; positional embeddings; token
  embedding.

The cascade runs the image groups cumulatively (steps 1..G_img), then, separately and with the image
tower trained, the text groups cumulatively (steps G_img+1..G_img+G_txt), and last "full": every
parameter of both towers re-initialised. The temperature ``logit_scale`` (and ``logit_bias``)
belongs to neither tower and is kept: the methods explain the cosine similarity, which it does not
change.

Re-initialised values come from one freshly initialised copy of the model per seed (drawn on the
CPU, so a seed gives the same weights on any device); a step copies its groups' tensors from it, so
the cascade is nested. The copy is initialised by the library's own initialisers: every torch layer's
``reset_parameters`` (Linear, Conv, LayerNorm and BatchNorm: weight 1, bias 0, running statistics
reset; Embedding; MultiheadAttention), then open_clip's text-tower initialiser, open_clip's
constructor draw N(0, width^-1/2) for the vision tower's class embedding, positional embedding and
projection, timm's ``init_weights`` and Hugging Face's ``_init_weights``. Constant-initialised tensors
(norm weights, zero biases) are thereby reset to their initial value, as Adebayo et al. re-initialise.
A tensor that no initialiser reaches is drawn by a documented fallback (biases 0, other vectors 1,
matrices N(0, 0.02)) and named in the randomised model's ``meta["fallback_init"]``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types

import torch
from torch import nn

from ..errors import MatexError

FALLBACK_STD = 0.02
SHARED = ("logit_scale", "logit_bias")  # neither tower's

# (group, regex on the parameter name inside its tower), top down; "{block}" marks the block groups
_IMAGE_RULES = {
    "open_clip": [
        ("projection + final norm", r"(proj|ln_post\..*|attn_pool\..*|ln_post)"),
        ("{block}", r"transformer\.resblocks\.(\d+)\..*"),
        ("ln_pre", r"ln_pre\..*"),
        ("positional + class embeddings", r"(positional_embedding|class_embedding)"),
        ("patch embedding / stem", r"conv1(\..*)?"),
    ],
    "timm": [
        ("projection + final norm", r"(head\..*|trunk\.(norm|fc_norm|head|attn_pool|head_drop)\..*)"),
        ("{block}", r"trunk\.blocks\.(\d+)\..*"),
        ("ln_pre", r"trunk\.norm_pre\..*"),
        ("positional + class embeddings", r"trunk\.(pos_embed|cls_token|reg_token)"),
        ("patch embedding / stem", r"trunk\.patch_embed\..*"),
    ],
}
_TEXT_RULES = {
    "open_clip": [
        ("projection + final norm", r"(text_projection(\..*)?|ln_final\..*)"),
        ("{block}", r"transformer\.resblocks\.(\d+)\..*"),
        ("positional embedding", r"(positional_embedding|cls_emb)"),
        ("token embedding", r"token_embedding\..*"),
    ],
    "hf_bert": [
        ("projection + final norm", r"(proj\..*|proj|pooler\..*|transformer\.pooler\..*)"),
        ("{block}", r"transformer\.encoder\.layer\.(\d+)\..*"),
        ("positional embedding", r"transformer\.embeddings\.(position_embeddings|token_type_embeddings|LayerNorm)\..*"),
        ("token embedding", r"transformer\.embeddings\.word_embeddings\..*"),
    ],
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One cascade step: the tower it belongs to, its label (cumulative) and the parameter names
    it randomises in total (this step's group and every group above it in the same cascade)."""

    tower: str  # "image" | "text" | "full"
    label: str
    group: str
    names: frozenset[str]


@dataclasses.dataclass(frozen=True)
class CascadePlan:
    image_groups: list[tuple[str, list[str]]]  # (group, parameter names), top down
    text_groups: list[tuple[str, list[str]]]

    @property
    def steps(self) -> list[Step]:
        out: list[Step] = []
        for tower, groups in (("image", self.image_groups), ("text", self.text_groups)):
            names: set[str] = set()
            for j, (group, members) in enumerate(groups):
                names |= set(members)
                label = f"{tower}: {group}" if j == 0 else f"{tower}: + {group}"
                out.append(Step(tower, label, group, frozenset(names)))
        every = {n for _, m in self.image_groups + self.text_groups for n in m}
        out.append(Step("full", "full: both towers", "both towers", frozenset(every)))
        return out

    @property
    def n_image(self) -> int:
        return len(self.image_groups)

    @property
    def n_text(self) -> int:
        return len(self.text_groups)


def _towers(clip: nn.Module) -> tuple[str, nn.Module, str, str, nn.Module]:
    """(image prefix, image tower, image kind, text prefix, text kind) of an open_clip CLIP."""
    visual = getattr(clip, "visual", None)
    if visual is None:
        raise MatexError(f"sanity check: {type(clip).__name__} has no vision tower (.visual)")
    image_kind = "timm" if hasattr(visual, "trunk") else "open_clip"
    if image_kind == "open_clip" and not hasattr(getattr(visual, "transformer", None), "resblocks"):
        raise MatexError(f"sanity check: vision tower {type(visual).__name__} is neither an open_clip ViT nor timm")
    text = getattr(clip, "text", None)
    if text is None:
        return "visual.", visual, image_kind, "", "open_clip"  # CLIP: the text tower's modules sit on the model
    return (
        "visual.",
        visual,
        image_kind,
        "text.",
        "hf_bert"
        if hasattr(text, "transformer") and hasattr(getattr(text.transformer, "encoder", None), "layer")
        else "open_clip",
    )


def _group(names: list[str], rules, tower: str) -> list[tuple[str, list[str]]]:
    """Place every name in its group (top down; blocks numbered from the input, listed last first)."""
    fixed: dict[str, list[str]] = {g: [] for g, _ in rules if g != "{block}"}
    blocks: dict[int, list[str]] = {}
    for name in names:
        for group, pattern in rules:
            match = re.fullmatch(pattern, name)
            if match:
                if group == "{block}":
                    blocks.setdefault(int(match.group(1)), []).append(name)
                else:
                    fixed[group].append(name)
                break
        else:
            raise MatexError(
                f"sanity check: {tower} tower parameter {name!r} fits no cascade group; every tensor must be "
                "randomised, so this architecture needs a rule in matex/metrics/cascade.py"
            )
    out: list[tuple[str, list[str]]] = []
    for group, _ in rules:
        if group == "{block}":
            out += [(f"block {i + 1}", blocks[i]) for i in sorted(blocks, reverse=True)]
        elif fixed[group]:
            out.append((group, fixed[group]))
    return out


def cascade_plan(model) -> CascadePlan:
    """The groups of both towers, top down, from the model's ``named_parameters``."""
    clip = model.clip
    image_prefix, _, image_kind, text_prefix, text_kind = _towers(clip)
    image, text = [], []
    for name, _ in clip.named_parameters():
        if name.startswith(image_prefix):
            image.append(name[len(image_prefix) :])
        elif name not in SHARED:
            text.append(name[len(text_prefix) :] if name.startswith(text_prefix) else name)
    image_groups = [(g, [image_prefix + n for n in m]) for g, m in _group(image, _IMAGE_RULES[image_kind], "image")]
    text_groups = [(g, [text_prefix + n for n in m]) for g, m in _group(text, _TEXT_RULES[text_kind], "text")]
    return CascadePlan(image_groups, text_groups)


def cascade_labels(model) -> list[str]:
    """The label of every cascade step, 1..G_img+G_txt+1 (the last: "full: both towers")."""
    return [s.label for s in cascade_plan(model).steps]


@torch.no_grad()
def _library_inits(clip: nn.Module) -> None:
    """The model libraries' own initialisers, applied after every layer's ``reset_parameters``."""
    visual = clip.visual
    if hasattr(visual, "class_embedding"):  # open_clip ViT: drawn in its constructor, scale = width^-1/2
        scale = visual.class_embedding.shape[-1] ** -0.5
        for name in ("class_embedding", "positional_embedding", "proj"):
            tensor = getattr(visual, name, None)
            if isinstance(tensor, nn.Parameter):
                tensor.normal_(0.0, scale)
    if hasattr(visual, "trunk") and hasattr(visual.trunk, "init_weights"):
        visual.trunk.init_weights()
    text = getattr(clip, "text", clip)
    if hasattr(text, "token_embedding") and hasattr(text.transformer, "resblocks"):
        from open_clip.transformer import TextTransformer

        owner = types.SimpleNamespace(
            token_embedding=text.token_embedding,
            positional_embedding=text.positional_embedding,
            cls_emb=getattr(text, "cls_emb", None),
            transformer=text.transformer,
            text_projection=text.text_projection,
        )
        TextTransformer.init_parameters(owner)
    bert = getattr(text, "transformer", None)
    if hasattr(bert, "_init_weights") and hasattr(getattr(bert, "encoder", None), "layer"):
        for module in bert.modules():
            bert._init_weights(module)


def _children_first(module: nn.Module):
    for child in module.children():
        yield from _children_first(child)
    yield module


@torch.no_grad()
def reinitialised_state(clip: nn.Module, seed: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A freshly initialised copy of ``clip``'s state (CPU, float32; seeded) and the names of the
    parameters the fallback had to draw (see the module docstring)."""
    scratch = copy.deepcopy(clip).to("cpu", torch.float32)
    for param in scratch.parameters():
        param.fill_(math.nan)  # any tensor no initialiser reaches stays NaN and is found below
        if hasattr(param, "_is_hf_initialized"):
            param._is_hf_initialized = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in _children_first(scratch):  # as constructed: a layer before the block that holds it
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
        _library_inits(scratch)
        fallback = []
        for name, param in scratch.named_parameters():
            if torch.isnan(param).any():
                fallback.append(name)
                if name.endswith("bias"):
                    param.zero_()
                elif param.ndim < 2:
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, FALLBACK_STD)
    return {k: v.detach().clone() for k, v in scratch.state_dict().items()}, fallback


def randomize_cascading(model, step: int, seed: int, fresh=None):
    """A copy of ``model`` randomised up to cascade ``step`` (0 = none; see ``cascade_plan``); the
    original is untouched. ``fresh``: ``reinitialised_state(model.clip, seed)``, to draw it once
    for several steps."""
    steps = cascade_plan(model).steps
    if not 0 <= int(step) <= len(steps):
        raise MatexError(
            f"sanity check: cascade step {step} must lie in [0, {len(steps)}] "
            f"(the image tower's groups, the text tower's groups, then both towers)"
        )
    state, fallback = fresh if fresh is not None else reinitialised_state(model.clip, seed)
    clip = copy.deepcopy(model.clip)
    chosen = steps[int(step) - 1] if step else None
    names = chosen.names if chosen else frozenset()
    owners = {n.rpartition(".")[0] for n in names}
    with torch.no_grad():
        for name, tensor in [*clip.named_parameters(), *clip.named_buffers()]:
            is_owned_buffer = name not in names and name.rpartition(".")[0] in owners and name in state
            if name in names or (is_owned_buffer and not isinstance(tensor, nn.Parameter)):
                tensor.copy_(state[name].to(device=tensor.device, dtype=tensor.dtype))
    meta = {
        **model.meta,
        "cascade_step": int(step),
        "cascade_tower": chosen.tower if chosen else "none",
        "randomized": chosen.label if chosen else "none",
        "randomization_seed": int(seed),
        "fallback_init": sorted(n for n in fallback if n in names),
    }
    return dataclasses.replace(model, clip=clip, meta=meta)
