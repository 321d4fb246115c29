"""One direction per layer from two labelled groups of activations, with its provenance.

`fit_directions` turns the activations of a positive class (reasoning) and a negative class
(memory) into a `DirectionSet`: one vector per layer, pointing from the negative class toward
the positive one, plus where it came from (model fingerprint, site, position, class counts, a
hash of the data, the method and its parameters). Methods are interchangeable `Fitter` objects
made by factories: `diff_in_means` (the paper's LiReF), `reading_vector`, `contrast_mean`,
`pca_contrast`, `probe_direction`. `random_like` and `shuffled_labels` make controls.

Sets are saved as one safetensors file (float64 ``vectors``) whose header holds the JSON
metadata with sha256 checksums; pickle is never used.

Memory: fitting converts one layer at a time to float64, so it needs the activations plus
O(n_rows x d_model) float64 scratch; `pca_contrast` runs an SVD of the ``[n_pairs, d_model]``
difference matrix and `probe_direction` a scikit-learn fit on a NumPy copy of one layer. A
`DirectionSet` holds ``[layer, d_model]`` float64 on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ._io import atomic_write
from .cache import Activations, RunningStats
from .model import SITES

if TYPE_CHECKING:
    from .model import LensModel

__all__ = [
    "DirectionSet",
    "Fitter",
    "contrast_mean",
    "diff_in_means",
    "fit_directions",
    "pca_contrast",
    "probe_direction",
    "random_like",
    "reading_vector",
    "shuffled_labels",
]

_FORMAT = "liref_lens.DirectionSet/1"
_META_KEY = "liref_lens"
_ZERO_RTOL = 1e-7  # a mean difference this small relative to the class means counts as zero


@dataclass(frozen=True)
class Fitter:
    """A fitting method: ``fit_layer(pos [n, d], neg [m, d]) -> [d]`` in float64, per layer.

    Calling it on ``[n, layer, d]`` and ``[m, layer, d]`` tensors fits every layer and returns
    ``[layer, d]`` float64. ``method`` and ``params`` are recorded in the `DirectionSet`;
    ``paired`` methods need row ``i`` of both classes to form a pair.
    """

    method: str
    params: Mapping[str, Any]
    fit_layer: Callable[[Tensor, Tensor], Tensor]
    paired: bool = False

    def __call__(
        self, pos: Float[Tensor, "n layer d"], neg: Float[Tensor, "m layer d"]
    ) -> Float[Tensor, "layer d"]:
        if self.paired and pos.shape[0] != neg.shape[0]:
            raise ValueError(
                f"{self.method} needs paired rows but got {pos.shape[0]} positive and "
                f"{neg.shape[0]} negative rows; pass the pairs in matching order, or use "
                "diff_in_means() for unpaired data"
            )
        f64 = torch.float64
        layers = [self.fit_layer(pos[:, i].to(f64), neg[:, i].to(f64)) for i in range(pos.shape[1])]
        return torch.stack(layers)


def diff_in_means() -> Fitter:
    """Difference of class means ``mean(pos) - mean(neg)`` in float64 (the paper's LiReF).

    Example:
        >>> pos, neg = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]]]), torch.zeros(1, 1, 2)
        >>> diff_in_means()(pos, neg).tolist()
        [[2.0, 2.0]]
    """
    return Fitter("diff_in_means", {}, lambda p, n: p.mean(0) - n.mean(0))


def reading_vector(centered: bool = True) -> Fitter:
    """RepE-style reading vector: the mean positive activation.

    With ``centered=True`` (default) the overall mean of both classes (count-weighted) is
    subtracted, giving ``mean(pos) - mean(pos ∪ neg) = n_neg / (n_pos + n_neg) * diff-in-means``,
    which points from the negative toward the positive class. ``centered=False`` returns the
    raw ``mean(pos)``, a point in activation space rather than a contrast.

    Example:
        >>> pos, neg = torch.tensor([[[4.0, 0.0]]]), torch.zeros(3, 1, 2)
        >>> reading_vector()(pos, neg).tolist(), reading_vector(False)(pos, neg).tolist()
        ([[3.0, 0.0]], [[4.0, 0.0]])
    """

    def fit(pos: Tensor, neg: Tensor) -> Tensor:
        mean = pos.mean(0)
        return mean - torch.cat([pos, neg]).mean(0) if centered else mean

    return Fitter("reading_vector", {"centered": centered}, fit)


def contrast_mean() -> Fitter:
    """Paired contrast mean ``mean_i(pos_i - neg_i)``; needs equal counts (row i pairs row i).

    Example:
        >>> pos, neg = torch.tensor([[[3.0]], [[5.0]]]), torch.tensor([[[1.0]], [[1.0]]])
        >>> contrast_mean()(pos, neg).tolist()
        [[3.0]]
    """
    return Fitter("contrast_mean", {}, lambda p, n: (p - n).mean(0), paired=True)


def pca_contrast(scale_to_mean_diff: bool = False) -> Fitter:
    """First principal component of the paired differences ``pos_i - neg_i``.

    The PCA is uncentered, the top right singular vector of the difference matrix (found by
    an eigendecomposition of its smaller Gram matrix, ``min(n, d)`` square): centering would
    remove the shared offset that is the signal. The sign is fixed so the component has a
    positive dot product with the mean difference; its norm is 1, or the norm of the mean
    difference with ``scale_to_mean_diff=True``. Needs paired rows.

    Example:
        >>> pos, neg = torch.tensor([[[0.0, 2.0]], [[0.0, 4.0]]]), torch.zeros(2, 1, 2)
        >>> pca_contrast()(pos, neg).tolist(), pca_contrast(True)(pos, neg).tolist()
        ([[0.0, 1.0]], [[0.0, 3.0]])
    """

    def fit(pos: Tensor, neg: Tensor) -> Tensor:
        diff = pos - neg
        mean = diff.mean(0)
        # Top right singular vector via the smaller Gram matrix (cheaper than a full SVD).
        if diff.shape[0] >= diff.shape[1]:
            top = torch.linalg.eigh(diff.T @ diff).eigenvectors[:, -1]
        else:
            top = diff.T @ torch.linalg.eigh(diff @ diff.T).eigenvectors[:, -1]
            top = top / top.norm().clamp_min(torch.finfo(top.dtype).tiny)
        top = -top if float(top @ mean) < 0 else top
        return top * mean.norm() if scale_to_mean_diff else top

    return Fitter("pca_contrast", {"scale_to_mean_diff": scale_to_mean_diff}, fit, paired=True)


def probe_direction(C: float = 1e-3, max_iter: int = 1000, standardize: bool = True) -> Fitter:
    """Normal of an L2-regularised logistic-regression boundary (scikit-learn), in raw space.

    Features are standardised for the fit (``standardize=True``) and the weights mapped back,
    so the result is the raw-activation normal ``w / std``. The default ``C`` is small: a
    weakly regularised probe's direction is noisy when ``d_model`` is not small next to the
    row count; as ``C -> 0`` it tends to the (standardised) mean difference.

    Example:
        >>> pos, neg = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]]), -torch.tensor([[[1.0, 0.0]]])
        >>> probe_direction(C=1.0)(pos, neg)[0, 0].item() > 0
        True
    """

    def fit(pos: Tensor, neg: Tensor) -> Tensor:
        from sklearn.linear_model import LogisticRegression

        x = torch.cat([pos, neg]).detach().cpu().numpy()
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        scale = x.std(0) if standardize else np.ones(x.shape[1])
        scale[scale == 0] = 1.0
        clf = LogisticRegression(C=C, max_iter=max_iter).fit((x - x.mean(0)) / scale, y)
        return torch.from_numpy(clf.coef_[0] / scale)

    params = {"C": C, "max_iter": max_iter, "standardize": standardize}
    return Fitter("probe_direction", params, fit)


def _version() -> str:
    try:
        return metadata.version("liref-lens")
    except metadata.PackageNotFoundError:
        return "unknown"


def _zero_error(bad: Sequence[int], site: str) -> ValueError:
    layer = bad[0]
    why = "both classes have identical mean activations there"
    if site == "resid_pre" and layer == 0:
        why += " (resid_pre at layer 0 is the token embedding: same last token, same vector)"
    more = f" (also zero at layers {list(bad[1:])})" if len(bad) > 1 else ""
    return ValueError(
        f"direction at layer {layer} has zero norm: {why}{more}; drop that layer "
        "(layers=[...] without it) or use another site or position"
    )


def _check_nonzero(mean_pos: Tensor, mean_neg: Tensor, layers: Sequence[int], site: str) -> None:
    diff = (mean_pos - mean_neg).norm(dim=-1)
    ref = torch.maximum(mean_pos.norm(dim=-1), mean_neg.norm(dim=-1))
    zero = (diff <= _ZERO_RTOL * ref) | (diff == 0)
    if bool(zero.any()):
        raise _zero_error([layers[i] for i in zero.nonzero().flatten().tolist()], site)


@dataclass(frozen=True, eq=False)
class DirectionSet:
    """One direction per layer (``[layer, d_model]`` float64, CPU) and where it came from.

    Directions point from ``classes[1]`` (negative, memory) toward ``classes[0]`` (positive,
    reasoning). ``d_model`` is the width of ``site`` (``d_mlp`` for ``mlp_post``).

    Example:
        >>> ds = DirectionSet(torch.tensor([[3.0, 4.0]]), layers=(2,))
        >>> ds.unit().tolist(), ds.norms().tolist(), ds.d_model
        ([[0.6, 0.8]], [5.0], 2)
    """

    vectors: Float[Tensor, "layer d_model"]
    layers: tuple[int, ...]
    site: str = ""
    position: str = ""
    classes: tuple[str, str] = ("reasoning", "memory")
    counts: tuple[int, int] = (0, 0)
    model_fingerprint: str = ""
    model_name: str = ""
    n_layers: int | None = None
    data_hash: str = ""
    method: str = "diff_in_means"
    params: Mapping[str, Any] = field(default_factory=dict)
    version: str = field(default_factory=_version)
    #: dtype of the model's parameters when the activations were cached ("" if unknown);
    #: the vectors themselves are float64 whatever it was, and cast per hook
    model_dtype: str = ""

    def __post_init__(self) -> None:
        vec = torch.as_tensor(self.vectors).detach().to("cpu", torch.float64).clone()
        layers = tuple(int(layer) for layer in self.layers)
        if vec.ndim != 2 or vec.shape[0] != len(layers):
            raise ValueError(
                f"vectors must be [layer, d_model] with one row per layer {layers}, got shape "
                f"{tuple(vec.shape)}"
            )
        if not bool(torch.isfinite(vec).all()):
            raise ValueError("direction vectors contain NaN or inf; refit from finite activations")
        object.__setattr__(self, "vectors", vec)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        object.__setattr__(self, "params", dict(self.params))

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.layers)

    def norms(self) -> Float[Tensor, " layer"]:
        """Euclidean norm of each layer's raw vector."""
        return self.vectors.norm(dim=1)

    def unit(self) -> Float[Tensor, "layer d_model"]:
        """Unit-normalised vectors; raises on a zero-norm layer instead of returning NaN."""
        norms = self.norms()
        zero = norms == 0
        if bool(zero.any()):
            raise _zero_error(
                [self.layers[i] for i in zero.nonzero().flatten().tolist()], self.site
            )
        return self.vectors / norms[:, None]

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        """The raw vector of model layer ``layer``."""
        if layer not in self.layers:
            raise KeyError(f"no direction for layer {layer}; this set has layers {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def select_layers(self, layers: Sequence[int]) -> DirectionSet:
        """The same set restricted to ``layers`` (model layer indices), in that order."""
        rows = torch.stack([self.at(layer) for layer in layers])
        return replace(self, vectors=rows, layers=tuple(layers))

    def check_compatible(self, model: LensModel, *, allow_transfer: bool = False) -> None:
        """Raise ValueError unless these directions can be applied to ``model``.

        Width and layer range must always match. The fingerprint and layer count must match
        too unless ``allow_transfer=True`` (a deliberate transfer, e.g. base -> instruct).
        """
        width = model.width(self.site) if self.site in SITES else model.d_model
        if width != self.d_model:
            raise ValueError(
                f"directions have width {self.d_model} but this model's {self.site or 'residual'} "
                f"width is {width}: they were fitted on another architecture; refit them on "
                "this model (allow_transfer cannot bridge a size mismatch)"
            )
        missing = [layer for layer in self.layers if layer >= model.n_layers]
        if missing:
            raise ValueError(
                f"directions exist for layers {missing} but the model has {model.n_layers} "
                "layers; select layers that exist with .select_layers([...])"
            )
        if allow_transfer:
            return
        fingerprint = model.fingerprint
        fix = "refit on this model, or pass allow_transfer=True to transfer them deliberately"
        if self.n_layers is not None and self.n_layers != model.n_layers:
            raise ValueError(
                f"directions were fitted on a {self.n_layers}-layer model, this one has "
                f"{model.n_layers} layers; {fix}"
            )
        if not self.model_fingerprint:
            raise ValueError(f"these directions record no model fingerprint; {fix}")
        if self.model_fingerprint != fingerprint:
            raise ValueError(
                f"directions were fitted on model {self.model_name or '?'} (fingerprint "
                f"{self.model_fingerprint}) but this model's fingerprint is {fingerprint}; {fix}"
            )

    # ----- persistence ---------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "layers": list(self.layers),
            "d_model": self.d_model,
            "site": self.site,
            "position": self.position,
            "classes": list(self.classes),
            "counts": list(self.counts),
            "model_fingerprint": self.model_fingerprint,
            "model_name": self.model_name,
            "n_layers": self.n_layers,
            "data_hash": self.data_hash,
            "method": self.method,
            "params": dict(self.params),
            "version": self.version,
            "model_dtype": self.model_dtype,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file atomically (temp file in the same folder, then rename).

        Example:
            >>> import tempfile, pathlib
            >>> ds = DirectionSet(torch.tensor([[1.0, 0.0]]), layers=(0,), site="resid_pre")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     p = ds.save(pathlib.Path(d) / "dirs.safetensors")
            ...     DirectionSet.load(p).vectors.tolist()
            [[1.0, 0.0]]
        """
        meta = self._meta()
        try:
            body = json.dumps(meta, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"params must be plain JSON values (numbers, strings): {err}") from err
        header = {
            _META_KEY: body,
            "meta_sha256": hashlib.sha256(body.encode()).hexdigest(),
            "vectors_sha256": hashlib.sha256(self.vectors.numpy().tobytes()).hexdigest(),
        }
        return atomic_write(path, lambda tmp: save_file({"vectors": self.vectors}, tmp, header))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: LensModel | None = None,
        *,
        allow_transfer: bool = False,
    ) -> DirectionSet:
        """Read a file written by `save`, verifying checksums and shapes (and ``model``)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no direction-set file at {path}")
        bad = f"{path} is not an intact direction-set file"
        redo = "it was truncated or edited; re-save it with DirectionSet.save"
        try:
            with safe_open(str(path), framework="pt") as f:
                header, vectors = f.metadata() or {}, f.get_tensor("vectors")
        except SafetensorError as err:
            raise ValueError(f"{bad} ({err}); {redo}") from err
        body = header.get(_META_KEY)
        if body is None or hashlib.sha256(body.encode()).hexdigest() != header.get("meta_sha256"):
            raise ValueError(f"{bad}: its metadata is missing or fails its checksum; {redo}")
        meta = json.loads(body)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{bad}: format {meta.get('format')!r}, expected {_FORMAT!r}")
        shape = (len(meta["layers"]), meta["d_model"])
        if vectors.dtype != torch.float64 or tuple(vectors.shape) != shape:
            raise ValueError(
                f"{bad}: vectors are {vectors.dtype} {tuple(vectors.shape)}, the metadata says "
                f"float64 {shape}; {redo}"
            )
        if hashlib.sha256(vectors.numpy().tobytes()).hexdigest() != header.get("vectors_sha256"):
            raise ValueError(f"{bad}: the vector bytes fail their sha256 checksum; {redo}")
        fields = {k: v for k, v in meta.items() if k not in ("format", "d_model")}
        fields.update(classes=tuple(meta["classes"]), counts=tuple(meta["counts"]))
        out = cls(vectors=vectors, **fields)
        if model is not None:
            out.check_compatible(model, allow_transfer=allow_transfer)
        return out

    def save_pretrained(self, folder: str | os.PathLike[str], **card: Any) -> Path:
        """A shareable folder: safetensors, config and model card (`liref_lens.export.folder`).

        ``card``: ``scores``, ``baselines``, ``verdicts``, ``title``, ``description``,
        ``base_model``, ``license`` for the model card.
        """
        from .export.folder import save_pretrained

        return save_pretrained(self, folder, **card)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        model: LensModel | None = None,
        *,
        allow_transfer: bool = False,
    ) -> DirectionSet:
        """Read a folder of `save_pretrained` (or a hub repository id), verified."""
        from .export.folder import from_pretrained

        return from_pretrained(folder, model, allow_transfer=allow_transfer)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload as a folder to the Hugging Face Hub (`liref_lens.export.folder.push_to_hub`)."""
        from .export.folder import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_running_stats(
        cls,
        stats: RunningStats,
        pos_class: str,
        neg_class: str,
        *,
        layers: Sequence[int] | None = None,
        site: str = "",
        position: str = "",
        model: LensModel | None = None,
    ) -> DirectionSet:
        """Difference in means from streamed float64 class statistics.

        ``layers`` labels the stats' layer axis (default ``0..L-1``); stats of shape
        ``(d,)`` are one layer.

        Example:
            >>> rs = RunningStats(("r", "m"), (1, 2))
            >>> rs.update(torch.tensor([[[2.0, 1.0]], [[0.0, 1.0]]]), ["r", "m"])
            >>> DirectionSet.from_running_stats(rs, "r", "m").vectors.tolist()
            [[2.0, 0.0]]
        """
        for name in (pos_class, neg_class):
            if name in stats.classes and stats.count(name) == 0:
                raise ValueError(
                    f"class {name!r} is empty in these RunningStats (0 vectors); stream "
                    "activations of that class into them first, or check the labels"
                )
        mp, mn = stats.mean(pos_class), stats.mean(neg_class)
        if mp.ndim == 1:
            mp, mn = mp[None], mn[None]
        layer_t = tuple(layers) if layers is not None else tuple(range(mp.shape[0]))
        _check_nonzero(mp, mn, layer_t, site)
        h = hashlib.sha256()
        for name in (pos_class, neg_class):
            i = stats.classes.index(name)
            h.update(f"{name}:{stats.count(name)};".encode())
            h.update(stats.sums[i].detach().cpu().contiguous().numpy().tobytes())
        out = cls(
            vectors=mp - mn, layers=layer_t, site=site, position=position,
            classes=(pos_class, neg_class),
            counts=(stats.count(pos_class), stats.count(neg_class)),
            data_hash=h.hexdigest(), method="diff_in_means", params={"streamed": True},
            **_model_fields(model),
        )  # fmt: skip
        if model is not None:
            out.check_compatible(model)
        return out


def _model_fields(model: LensModel | None) -> dict[str, Any]:
    if model is None:
        return {}
    return dict(
        model_fingerprint=model.fingerprint,
        model_name=model.name,
        n_layers=model.n_layers,
        model_dtype=model.dtype_name,
    )


def _acts_fields(acts: Activations) -> dict[str, Any]:
    """The model provenance that activations carry, as `DirectionSet` fields."""
    return dict(
        model_fingerprint=acts.model_fingerprint,
        model_name=acts.model_name,
        model_dtype=str(acts.meta.get("model_dtype", "")),
    )


def _rows(x: Activations | Tensor, name: str, layers: Sequence[int] | None) -> Tensor:
    if isinstance(x, Activations):
        t = x.tensor
        return t if layers is None else t[:, [x.layer_position(layer) for layer in layers]]
    if not isinstance(x, Tensor) or x.ndim not in (2, 3):
        raise TypeError(f"{name} must be Activations or a [n, layer, d] / [n, d] tensor")
    return x[:, None] if x.ndim == 2 else x


def _check_rows(t: Tensor, cls: str) -> None:
    if t.shape[0] == 0:
        raise ValueError(
            f"class {cls!r} is empty (0 rows); each class needs at least one activation row: "
            "check the labels or the filter that split the prompts"
        )
    bad = ~torch.isfinite(t).all(dim=-1)
    if bool(bad.any()):
        row, li = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"class {cls!r} activations contain NaN or inf (first: row {row}, layer axis {li}); "
            "recache with dtype=torch.float32 or drop those rows"
        )


def fit_directions(
    pos: Activations | Float[Tensor, "n *layer d"],
    neg: Activations | Float[Tensor, "m *layer d"],
    method: Fitter | None = None,
    *,
    classes: tuple[str, str] = ("reasoning", "memory"),
    layers: Sequence[int] | None = None,
    model: LensModel | None = None,
    site: str = "",
    position: str = "",
) -> DirectionSet:
    """Fit one direction per layer pointing from ``neg`` toward ``pos``.

    Args:
        pos: activations of the positive (reasoning) class: `Activations` of one site, or a
            tensor ``[n, layer, d]`` (``[n, d]``: one layer).
        neg: activations of the negative (memory) class, in the same form.
        method: a `Fitter` (default `diff_in_means`).
        classes: names of the positive and negative class.
        layers: model layers to fit; for `Activations` a selection of the cached layers,
            for raw tensors the labels of their layer axis (default ``0..L-1``).
        model: the model the activations came from; its fingerprint and layer count are
            recorded and checked against the activations' fingerprint.
        site: for `Activations` holding several sites, the one to fit; for raw tensors,
            provenance (as is ``position``; `Activations` carry their own).

    Example:
        >>> pos, neg = torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.tensor([[0.0, 1.0]])
        >>> fit_directions(pos, neg).vectors.tolist()
        [[2.0, 0.0]]
    """
    method = method if method is not None else diff_in_means()
    provenance: dict[str, Any] = {}
    if isinstance(pos, Activations) or isinstance(neg, Activations):
        if not (isinstance(pos, Activations) and isinstance(neg, Activations)):
            raise TypeError("pass both classes as Activations or both as tensors")
        if site and len(pos.sites) > 1:
            pos, neg = pos.select_site(site), neg.select_site(site)
        for attr in ("site", "layers", "position", "model_fingerprint"):
            if getattr(pos, attr) != getattr(neg, attr):
                raise ValueError(
                    f"the two classes differ in {attr} ({getattr(pos, attr)!r} vs "
                    f"{getattr(neg, attr)!r}); cache both with the same model, layers, site "
                    "and position"
                )
        site, position = pos.site, pos.position
        provenance = _acts_fields(pos)
        layer_t = tuple(layers) if layers is not None else pos.layers
        p, n = _rows(pos, "pos", layers), _rows(neg, "neg", layers)
    else:
        p, n = _rows(pos, "pos", None), _rows(neg, "neg", None)
        layer_t = tuple(layers) if layers is not None else tuple(range(p.shape[1]))
    for t, cls in ((p, classes[0]), (n, classes[1])):
        _check_rows(t, cls)
    if p.shape[1:] != n.shape[1:]:
        raise ValueError(
            f"the classes have mismatched shapes [layer, d_model] {tuple(p.shape[1:])} vs "
            f"{tuple(n.shape[1:])}; both must come from the same model, site and layers"
        )
    if len(layer_t) != p.shape[1]:
        raise ValueError(f"layers {list(layer_t)} do not label the {p.shape[1]} layers given")
    fingerprint = provenance.get("model_fingerprint", "")
    if model is not None and fingerprint and fingerprint != model.fingerprint:
        raise ValueError(
            f"the activations come from model fingerprint {fingerprint}, not from the model "
            f"passed ({model.fingerprint}); pass the model that produced them"
        )
    f64 = torch.float64
    means = [torch.stack([t[:, i].to(f64).mean(0) for i in range(t.shape[1])]) for t in (p, n)]
    _check_nonzero(means[0], means[1], layer_t, site)
    h = hashlib.sha256()
    for t, cls in ((p, classes[0]), (n, classes[1])):
        h.update(f"{cls}:{tuple(t.shape)};".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    fields = {**provenance, **_model_fields(model)}
    vectors = method(p, n)
    if tuple(vectors.shape) != tuple(p.shape[1:]):
        raise ValueError(
            f"{method.method} returned shape {tuple(vectors.shape)}, not {p.shape[1:]}"
        )
    out = DirectionSet(
        vectors=vectors, layers=layer_t, site=site, position=position, classes=classes,
        counts=(p.shape[0], n.shape[0]), data_hash=h.hexdigest(), method=method.method,
        params=method.params, **fields,
    )  # fmt: skip
    if bool((out.norms() == 0).any()):
        out.unit()  # raises the zero-norm error naming the layer
    if model is not None:
        out.check_compatible(model)
    return out


def random_like(
    directions: DirectionSet, n: int = 1, *, generator: torch.Generator
) -> list[DirectionSet]:
    """``n`` random directions (isotropic Gaussian) with the same per-layer norms.

    Example:
        >>> ds = DirectionSet(torch.tensor([[3.0, 4.0]]), layers=(0,))
        >>> ctl = random_like(ds, 2, generator=torch.Generator().manual_seed(0))
        >>> [round(c.norms().item(), 6) for c in ctl]
        [5.0, 5.0]
    """
    directions.unit()  # raises on a zero-norm layer
    norms = directions.norms()
    out = []
    for i in range(n):
        g = torch.randn(directions.vectors.shape, generator=generator, dtype=torch.float64)
        params = {"control": "random", "of": directions.method, "index": i}
        params["seed"] = int(generator.initial_seed())
        out.append(
            replace(directions, vectors=g / g.norm(dim=1, keepdim=True) * norms[:, None],
                    method="random", params=params)
        )  # fmt: skip
    return out


def shuffled_labels(
    pos: Activations | Tensor,
    neg: Activations | Tensor,
    method: Fitter | None = None,
    *,
    generator: torch.Generator,
    n: int = 1,
    **kwargs: Any,
) -> list[DirectionSet]:
    """Refits on randomly relabelled rows (a null distribution for the real fit).

    Unpaired methods permute the pooled rows and re-split them at the class sizes; paired
    methods swap each pair's labels with probability 1/2, keeping the pairing.
    ``kwargs`` go to `fit_directions`.

    Example:
        >>> pos, neg = torch.tensor([[[1.0]], [[2.0]], [[4.0]], [[8.0]]]), torch.zeros(4, 1, 1)
        >>> ctl = shuffled_labels(pos, neg, generator=torch.Generator().manual_seed(0))
        >>> ctl[0].params["control"]
        'shuffled_labels'
    """
    method = method if method is not None else diff_in_means()
    layers = kwargs.pop("layers", None)
    p = _rows(pos, "pos", layers if isinstance(pos, Activations) else None)
    q = _rows(neg, "neg", layers if isinstance(neg, Activations) else None)
    if isinstance(pos, Activations):
        kwargs.setdefault("site", pos.site)
        kwargs.setdefault("position", pos.position)
        layers = layers if layers is not None else pos.layers
    out = []
    for i in range(n):
        if method.paired:
            if p.shape != q.shape:
                method(p, q)  # raises the pairing error
            swap = torch.rand(p.shape[0], generator=generator) < 0.5
            p2 = torch.where(swap[:, None, None], q, p)
            q2 = torch.where(swap[:, None, None], p, q)
        else:
            pooled = torch.cat([p, q])
            perm = torch.randperm(pooled.shape[0], generator=generator)
            p2, q2 = pooled[perm[: p.shape[0]]], pooled[perm[p.shape[0] :]]
        ds = fit_directions(p2, q2, method, layers=layers, **kwargs)
        if isinstance(pos, Activations) and not ds.model_fingerprint:
            ds = replace(ds, **_acts_fields(pos))
        params = {**ds.params, "control": "shuffled_labels", "index": i}
        params["seed"] = int(generator.initial_seed())
        out.append(replace(ds, params=params))
    return out
