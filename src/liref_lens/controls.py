"""Steering controls drawn like the fitted direction, for `liref_lens.Experiment`.

A steering effect means something only next to vectors of the same size that carry no
signal. Which vectors count as "no signal" matters: on Gemma 3 270M (``Add`` at layer 16,
alpha +-1; ``scripts/confound_designs.py``) isotropic random directions of the fitted norm
moved the next-token distribution 4-41 nats (KL) where the fitted direction moved it 0.03-0.30
and the two kinds below 0.03-0.28: isotropic noise hits dimensions the model is sensitive to,
which the fitted direction, like the activations, avoids. So there are three kinds, each
rescaled per layer to the fitted direction's norm:

- ``random``: an isotropic Gaussian direction (drawn in `Experiment` itself, unchanged);
- ``shuffled``: the difference in means after randomly relabelling the pooled rows
  (`liref_lens.directions.shuffled_labels`), a direction drawn the way the fitted one was;
- ``covariance``: a Gaussian with the activations' within-class covariance at that layer,
  ``g = Xc^T z`` with ``Xc`` the rows centred on their class mean and ``z ~ N(0, I)`` (so
  ``Cov(g)`` is proportional to the within-class covariance, without the class difference).

Both need the activations the direction was fitted on. Control ``i`` of a kind is one vector
per layer, the same across alphas; ``shuffled`` control ``i`` is one relabelling refitted at
every layer. Seeds derive from ``(seed, kind)`` (and the layer, for ``covariance``), so a
layer's vectors do not depend on which other layers are in the grid.

Memory: one float64 copy of a layer's ``[n_rows, d]`` activations at a time, and ``[n, d]``
float64 unit vectors per layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .cache import Activations
from .directions import shuffled_labels

__all__ = ["CONTROL_KINDS", "control_directions"]

CONTROL_KINDS = ("random", "shuffled", "covariance")


def _seed(seed: int, *parts: object) -> int:
    blob = repr((seed, *parts)).encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _check(pos: Activations, neg: Activations, layers: Sequence[int], site: str) -> None:
    for name, acts in (("pos", pos), ("neg", neg)):
        if site not in acts.sites:
            raise ValueError(
                f"the {name} activations hold sites {acts.sites}, not {site!r}; pass the "
                "activations the direction was fitted on"
            )
        missing = [layer for layer in layers if layer not in acts.layers]
        if missing:
            raise ValueError(
                f"the {name} activations lack layers {missing} (cached: {list(acts.layers)}); "
                "cache every steered layer"
            )
        if len(acts) < 2:
            raise ValueError(f"the {name} activations have {len(acts)} row; controls need >= 2")


def control_directions(
    kind: str,
    pos: Activations,
    neg: Activations,
    layers: Sequence[int],
    n: int,
    *,
    seed: int = 0,
    site: str | None = None,
) -> dict[int, Float[Tensor, "n d"]]:
    """``n`` unit control directions of ``kind`` (``shuffled`` or ``covariance``) per layer.

    Args:
        kind: ``"shuffled"`` or ``"covariance"`` (``"random"`` is drawn by `Experiment`).
        pos: activations of the positive class, as the direction was fitted on.
        neg: activations of the negative class.
        layers: model layers to draw at.
        n: controls per layer.
        seed: seeds the draws (with ``kind`` and, for ``covariance``, the layer).
        site: the site to read when the activations hold several.

    Returns:
        ``{layer: [n, d] float64 unit vectors}``; row ``i`` is control ``i``.

    Example:
        >>> from liref_lens import cache_activations
        >>> pos = cache_activations(lm, prompts[::2], layers=[1, 2], progress=False)
        >>> neg = cache_activations(lm, prompts[1::2], layers=[1, 2], progress=False)
        >>> out = control_directions("covariance", pos, neg, [2], n=3, seed=0)
        >>> tuple(out[2].shape), round(float(out[2][0].norm()), 6)
        ((3, 32), 1.0)
    """
    if kind not in CONTROL_KINDS[1:]:
        raise ValueError(f"unknown control kind {kind!r}; this draws {CONTROL_KINDS[1:]}")
    site = site or pos.site
    _check(pos, neg, layers, site)
    if kind == "shuffled":
        gen = torch.Generator().manual_seed(_seed(seed, kind))
        p, q = pos.select_site(site), neg.select_site(site)
        sets = shuffled_labels(p, q, generator=gen, n=n, layers=list(layers))
        return {layer: _unit(torch.stack([s.at(layer) for s in sets])) for layer in layers}
    out = {}
    for layer in layers:
        x = [acts.at_layer(layer, site).to(torch.float64) for acts in (pos, neg)]
        centred = torch.cat([t - t.mean(0) for t in x])
        gen = torch.Generator().manual_seed(_seed(seed, kind, layer))
        z = torch.randn(n, centred.shape[0], generator=gen, dtype=torch.float64)
        out[layer] = _unit(z @ centred)
    return out
