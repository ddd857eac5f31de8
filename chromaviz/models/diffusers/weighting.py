"""AUTOMATIC1111's emphasis arithmetic on a CLIP text encoder's token embeddings.

The webui (``modules/sd_hijack_clip.py``, ``FrozenCLIPEmbedderWithCustomWordsBase``) tokenizes each
emphasis fragment on its own, gives every token its fragment's weight (1 for the start, end and
padding tokens), encodes the tokens, multiplies each token's embedding by its weight and rescales
the whole so that its mean is what it was before the weights::

    z = encoder(tokens);  mean = z.mean();  z = z · w;  z = z · mean / z.mean()

:func:`encode_weighted` does this for one prompt and one encoder (SDXL: once per encoder, as the
webui does, the results side by side). It is the default arithmetic for the emphasis syntax
(``docs/prompts.md``); compel's is the other.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

HIDDEN_STATES = ("last", "penultimate")
"""Which hidden states an encoder gives: the final layer-normed ones (SD 1.x/2.x), or the
penultimate layer's without the final norm (SDXL), as each pipeline's ``encode_prompt`` takes them."""


def weighted_tokens(tokenizer: Any, fragments: Sequence[tuple[str, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and their weights, shape (1, T) each, T = ``tokenizer.model_max_length``.

    Each fragment is tokenized on its own (no start or end token), the tokens are joined and cut to
    T − 2, then framed by the start and end tokens and padded with the tokenizer's padding token, as
    the pipeline pads its prompts. The start, end and padding tokens weigh 1.

    Raises
    ------
    ValueError
        If a weight is not a finite number.
    """
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in fragments:
        weight = float(weight)
        if not math.isfinite(weight):
            raise ValueError(f"the emphasis weight of {text!r} is {weight}; weights are finite numbers")
        tokens = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
        ids += tokens
        weights += [weight] * len(tokens)
    room = tokenizer.model_max_length - 2
    ids, weights = ids[:room], weights[:room]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padding = room - len(ids)
    ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id, *[pad] * padding]
    weights = [1.0, *weights, 1.0, *[1.0] * padding]
    return torch.tensor([ids]), torch.tensor([weights], dtype=torch.float64)


DEGENERATE_MEAN = 1e-4
"""A mean below this fraction of the embeddings' mean magnitude is rounding noise: the webui's
rescaling would divide by it (an encoder whose outputs average to zero, as a random one's final layer
norm gives), so the weighted embeddings are then left unscaled."""


def restore_mean(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``z`` (B, T, D) with each token's embedding times its weight (B, T), rescaled to the mean ``z`` had
    (unscaled where either mean is below :data:`DEGENERATE_MEAN` of the mean magnitude).

    Examples
    --------
    >>> z = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    >>> restore_mean(z, torch.tensor([[1.0, 2.0]]))  # z·w = [[1, 2], [6, 8]], mean 4.25 → 2.5
    tensor([[[0.5882, 1.1765],
             [3.5294, 4.7059]]])
    """
    mean = z.mean()
    weighted = z * weights.to(z.dtype)[..., None]
    floor = DEGENERATE_MEAN * z.abs().mean()
    if mean.abs() <= floor or weighted.mean().abs() <= floor:
        return weighted
    return weighted * (mean / weighted.mean())


@torch.no_grad()
def encode_weighted(tokenizer: Any, encoder: Any, fragments: Sequence[tuple[str, float]], *,
                    hidden_states: str = "last", device: torch.device | str | None = None) -> torch.Tensor:
    """One prompt's token embeddings, shape (1, T, D), with the webui's emphasis arithmetic.

    Parameters
    ----------
    tokenizer, encoder
        A CLIP tokenizer and its ``CLIPTextModel`` / ``CLIPTextModelWithProjection``.
    fragments : sequence of (str, float)
        :func:`chromaviz.prompts.parse_emphasis` of the prompt.
    hidden_states : {"last", "penultimate"}
        :data:`HIDDEN_STATES`.
    device
        Where the encoder runs (default: its own device).
    """
    if hidden_states not in HIDDEN_STATES:
        raise ValueError(f"hidden_states must be one of {HIDDEN_STATES}, got {hidden_states!r}")
    ids, weights = weighted_tokens(tokenizer, fragments)
    out = encoder(ids.to(device or encoder.device), output_hidden_states=hidden_states == "penultimate")
    z = out.last_hidden_state if hidden_states == "last" else out.hidden_states[-2]
    return restore_mean(z, weights.to(z.device))
