"""The network as a diagram, annotated with the shapes of its own forward pass (the paper's
Figs. 1 and 2): :func:`architecture`.

Every shape printed comes from :func:`rrid.explain.architecture_shapes` (one forward pass on the
meta device); this module only places boxes and arrows. ``detail="model"`` draws the whole
network (:func:`_draw_model`: the trunk, then one branch per scale); ``detail="scale"`` one scale
in detail (:func:`_draw_scale`: how q_1 is made, and GCP or the global pooling).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from rrid.explain import architecture_shapes
from rrid.model import BACKBONES, RRIDConfig
from rrid.paper import TABLE2
from rrid.viz.style import use_style

__all__ = ["architecture"]

_FILL = {"input": "#eeeeee", "backbone": "#d9d9d9", "map": "#cfe3f2", "local": "#d6ecd2", "global": "#fbe3c4",
         "relation": "#b9dcb3", "gcp": "#f6c88f", "out": "#e4d7ef"}
_BACKBONE_NAMES = {"resnet50": "ResNet-50", "resnet34": "ResNet-34", "resnet18": "ResNet-18"}
# How each value of RRIDConfig.relation is drawn: the title of its box in Fig. 1, the input of
# R_p (in q_1 = p̄_1 + R_p(input)) and whether that input is the concatenation T(p̄_1, r̄_1).
# None: no relation module (q_i = p̄_i). A new variant needs one entry here.
_RELATION_DRAWING = {
    True: dict(title="relation module", argument=r"T(\bar{p}_1, \bar{r}_1)", concat=True),
    "rest_only": dict(title="rest-only relation", argument=r"\bar{r}_1", concat=False),
    False: None,
}




def _dims(shape, order=None) -> str:
    """(C, h, w) -> "h × w × C" (the paper's H x W x C order), (n, C) -> "n × C", (C,) -> "C"."""
    if order == "hwc":
        shape = (shape[1], shape[2], shape[0])
    return " × ".join(f"{d:,}" for d in shape)


def _stripe_text(heights, x_shape, each=True) -> str:
    lo, hi = min(heights), max(heights)
    rows = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{rows} × {x_shape[2]} × {x_shape[0]:,}" + (" each" if each else "")


class _Canvas:
    """Boxes and arrows in inches (one data unit = one inch of the figure)."""

    def __init__(self, width, height, fontsize=9):
        self.fig = plt.figure(figsize=(width, height))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.fontsize = fontsize

    def box(self, cx, cy, w, title, shape=None, key=None, fill="map", gid=None, h=0.5):
        """A rounded box centred at (cx, cy): ``title`` above, ``shape`` (gid ``shape:<key>``) below."""
        self.ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                         fc=_FILL[fill], ec="#444444", lw=0.8, gid=gid))
        if shape is None:
            self.ax.text(cx, cy, title, ha="center", va="center", fontsize=self.fontsize)
        else:
            self.ax.text(cx, cy + h * 0.2, title, ha="center", va="center", fontsize=self.fontsize)
            self.ax.text(cx, cy - h * 0.24, shape, ha="center", va="center", fontsize=self.fontsize - 0.5,
                         color="#222222", gid=f"shape:{key}", fontweight="bold")
        return dict(cx=cx, cy=cy, w=w, h=h)

    def arrow(self, a, b, dx_a=0.0, dx_b=0.0):
        """From the bottom of box ``a`` to the top of box ``b`` (x offsets ``dx_a``, ``dx_b``)."""
        self.ax.annotate("", xy=(b["cx"] + dx_b, b["cy"] + b["h"] / 2), xytext=(a["cx"] + dx_a, a["cy"] - a["h"] / 2),
                         arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444", shrinkA=0, shrinkB=1))

    def path(self, points):
        """A polyline ending in an arrow head (the skip connections)."""
        xs, ys = zip(*points)
        self.ax.plot(xs[:-1], ys[:-1], color="#444444", lw=0.8)
        self.ax.annotate("", xy=points[-1], xytext=points[-2],
                         arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444", shrinkA=0, shrinkB=0))


def _describe(config) -> str:
    arch = (tuple(sorted(config.scales)), config.global_pool, config.local_pool, config.relation)
    for t in TABLE2:
        if (tuple(sorted(t.scales)), t.global_pool, t.local_pool, t.relation) == arch:
            return f"Table 2, row {t.row}" + (f" ({t.name})" if t.name else "")
    if config.relation == "rest_only":
        return "rest-only variant (Fig. 6)"
    return "custom variant"


def architecture(config=None, input_size=None, detail: str = "model", scale: int | None = None, model=None):
    """The network drawn with the shapes of its own forward pass (the paper's Figs. 1 and 2).

    ``config``: an ``RRIDConfig`` or a Table 2 row number (default: Ours-F); ``model``: an
    ``RRID`` to draw instead (its ``config`` is used). ``input_size``: (H, W) of the dummy
    image, default the paper's (384, 128). Every shape printed in the figure comes from
    :func:`rrid.explain.architecture_shapes` (one real forward pass), so the drawing cannot drift from the
    code; shapes are written in the paper's order (H × W × C for maps).

    ``detail="model"`` (Fig. 1): image -> backbone -> feature map x -> one branch per scale P_n
    (n stripes, p_i by GMP/GAP, the relation module or a plain reduction -> q_1..q_n, GCP or a
    global pooling -> q_0) -> the concatenated embedding of ``config.feature_dim`` numbers.
    ``detail="scale"`` (Fig. 2): one scale (``scale``, default the largest n) in detail: (a)
    how q_1 is made (p_1, r_1, p̄_1, r̄_1, T, R_p, the skip connection) and (b) GCP (p_max,
    p_cont, p̄_max, p̄_cont, T, R_g, the skip connection). Returns the Figure.
    """
    if detail not in ("model", "scale"):
        raise ValueError(f"architecture(detail={detail!r}): expected 'model' (Fig. 1) or 'scale' (Fig. 2)")
    if model is not None:
        config = model.config
    else:
        config = RRIDConfig.table2(config) if isinstance(config, int) else (config or RRIDConfig())
    if config.relation not in _RELATION_DRAWING:
        raise ValueError(f"architecture: no drawing for RRIDConfig.relation={config.relation!r}; "
                         f"expected one of {list(_RELATION_DRAWING)} (add it to rrid.viz.diagram._RELATION_DRAWING)")
    shapes = architecture_shapes(config, input_size, model)
    use_style()
    title = (f"{_describe(config)}: {_BACKBONE_NAMES[config.backbone]}, "
             f"input {shapes['image'][1]} × {shapes['image'][2]}, "
             f"C = {BACKBONES[config.backbone]:,}, c = {config.reduced_dim}")
    if detail == "model":
        return _draw_model(config, shapes, title)
    scale = max(config.scales) if scale is None else scale
    if scale not in config.scales:
        raise ValueError(f"architecture(scale={scale!r}): expected one of the config's scales {list(config.scales)}")
    return _draw_scale(config, shapes, scale, title)


def _pool_name(mode) -> str:
    return {"gmp": "GMP", "gap": "GAP", "gap+gmp": "GAP + GMP", "gcp": "GCP"}[mode]



# ----------------------------------------------------------------------------- Fig. 1: the whole network

_BRANCH_W, _SUB_W, _MARGIN = 2.75, 1.15, 0.15     # a scale's branch, a box beside another, the margin (inches)


def _draw_model(config, shapes, title):
    """Fig. 1: image -> backbone -> x, one dashed branch per scale (:func:`_draw_branch`), the embedding."""
    scales = sorted(config.scales, reverse=True)  # the model's head order: P6, P4, P2
    width = max(len(scales) * _BRANCH_W, 2 * _BRANCH_W) + 2 * _MARGIN
    height = 7 * 0.82 + 1.25
    ys = [height - 0.75 - 0.82 * k for k in range(8)]
    cv = _Canvas(width, height)
    mid = width / 2
    cv.ax.text(_MARGIN, height - 0.2, title, ha="left", va="center", fontsize=cv.fontsize, style="italic")
    img = cv.box(mid, ys[0], 2.6, "input image", _dims(shapes["image"], "hwc"), "image", "input")
    bb = cv.box(mid, ys[1], 2.6, f"{_BACKBONE_NAMES[config.backbone]}, no GAP / fc, last stride {config.last_stride}",
                fill="backbone", h=0.42)
    cv.arrow(img, bb)
    x = cv.box(mid, ys[2], 2.6, "feature map x", _dims(shapes["x"], "hwc"), "x", "map")
    cv.arrow(bb, x)
    start = (width - len(scales) * _BRANCH_W) / 2
    outputs = []
    for k, n in enumerate(scales):
        outputs += _draw_branch(cv, config, shapes, n, start + k * _BRANCH_W, ys, x)
    count = sum(shapes[f"P{n}/q"][0] for n in scales if f"P{n}/q" in shapes)
    count += sum(f"P{n}/q0" in shapes for n in scales)
    what = "the embedding" if count == 1 else f"concatenate the {count} blocks: the embedding"
    cat = cv.box(mid, ys[7], min(width - 0.4, 5.2), what,
                 _dims(shapes["embedding"]), "embedding", "out")
    for o in outputs:
        cv.arrow(o, cat, dx_b=(o["cx"] - mid) * 0.3)
    return cv.fig


def _draw_branch(cv, config, shapes, n, left, ys, x) -> list[dict]:
    """The branch of scale P_n in the column starting at ``left``: its stripes and part features
    (when a local feature or GCP reads them), q_1..q_n and q_0; returns the output boxes."""
    s, cx = f"P{n}", left + _BRANCH_W / 2
    cv.ax.add_patch(FancyBboxPatch((left + 0.05, ys[6] - 0.3), _BRANCH_W - 0.1, ys[3] - ys[6] + 0.62,
                                   boxstyle="round,pad=0,rounding_size=0.1", fc="none", ec="#999999",
                                   lw=0.8, ls="--", gid=f"branch:{s}"))
    cv.ax.text(left + 0.12, ys[3] + 0.27, f"scale {s}", ha="left", va="bottom", fontsize=cv.fontsize - 1,
               color="#555555")
    gcp = config.global_pool == "gcp"
    shared = gcp or config.global_pool is None      # the stripes feed every box of the branch
    lx = cx if shared else cx - (_SUB_W + _MARGIN) / 2
    parts = _draw_parts(cv, config, shapes, n, lx, shared, ys, x) if config.local_pool or gcp else None
    outputs = []
    if config.local_pool:
        mx = cx - (_SUB_W + _MARGIN) / 2 if config.global_pool else cx
        outputs.append(_draw_local(cv, config, shapes, n, mx, lx, ys, parts))
    if config.global_pool:
        gx = cx + (_SUB_W + _MARGIN) / 2 if config.local_pool else cx
        outputs.append(_draw_global(cv, config, shapes, n, gx, lx, ys, parts, x))
    return outputs


def _draw_parts(cv, config, shapes, n, lx, shared, ys, x) -> dict:
    """The n stripes of x and their pooled part features p_1..p_n."""
    s, mid = f"P{n}", x["cx"]
    sub = _BRANCH_W - 0.3 if shared else _SUB_W
    stripes = cv.box(lx, ys[3], sub, f"{n} horizontal stripes" if shared else f"{n} stripes, each",
                     _stripe_text(shapes[f"{s}/stripes"], shapes["x"], shared), f"{s}/stripe", "map")
    cv.arrow(x, stripes, dx_a=(lx - mid) * 0.2)
    pool = config.local_pool or "gmp"
    key = f"{s}/p" if f"{s}/p" in shapes else f"{s}/gcp_in"
    what = f"{_pool_name(pool)} per stripe:" if shared else f"{_pool_name(pool)}:"
    parts = cv.box(lx, ys[4], sub, f"{what} $p_1 \\ldots p_{{{n}}}$", _dims(shapes[key]), key, "map")
    cv.arrow(stripes, parts)
    return parts


def _draw_local(cv, config, shapes, n, mx, lx, ys, parts) -> dict:
    """The relation module (or a plain 1×1 reduction) from p_1..p_n to q_1..q_n."""
    s = f"P{n}"
    relation = _RELATION_DRAWING[config.relation]
    if relation:
        module = cv.box(mx, ys[5], _SUB_W, relation["title"], None, fill="relation", gid=f"R_p:{s}", h=0.42)
        cv.ax.text(mx, ys[5] - 0.3, "$R_p$, skip", ha="center", va="top", fontsize=cv.fontsize - 1)
    else:
        module = cv.box(mx, ys[5], _SUB_W, "1×1 conv", None, fill="local", gid=f"reduce:{s}", h=0.42)
    cv.arrow(parts, module, dx_a=mx - lx)
    q = cv.box(mx, ys[6], _SUB_W, f"$q_1 \\ldots q_{{{n}}}$", _dims(shapes[f"{s}/q"]), f"{s}/q", "out")
    cv.ax.annotate("", xy=(mx, ys[6] + 0.25), xytext=(mx, ys[5] - 0.21 - (0.2 if relation else 0)),
                   arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444"))
    return q


def _draw_global(cv, config, shapes, n, gx, lx, ys, parts, x) -> dict:
    """GCP from the part features, or a global pooling of x and its 1×1 reduction, to q_0."""
    s, mid = f"P{n}", x["cx"]
    gcp = config.global_pool == "gcp"
    if gcp:
        module = cv.box(gx, ys[5], _SUB_W, "GCP", None, fill="gcp", gid=f"R_g:{s}", h=0.42)
        cv.ax.text(gx, ys[5] - 0.3, "$R_g$, skip", ha="center", va="top", fontsize=cv.fontsize - 1)
        cv.arrow(parts, module, dx_a=gx - lx)
    else:
        pooled = cv.box(gx, ys[3], _SUB_W, f"{_pool_name(config.global_pool)} of x", _dims(shapes[f"{s}/pooled"]),
                        f"{s}/pooled", "global")
        cv.arrow(x, pooled, dx_a=(gx - mid) * 0.2)
        module = cv.box(gx, ys[5], _SUB_W, "1×1 conv", None, fill="global", gid=f"pool:{s}", h=0.42)
        cv.arrow(pooled, module)
    q0 = cv.box(gx, ys[6], _SUB_W, "$q_0$", _dims(shapes[f"{s}/q0"]), f"{s}/q0", "out")
    cv.ax.annotate("", xy=(gx, ys[6] + 0.25), xytext=(gx, ys[5] - 0.21 - (0.2 if gcp else 0)),
                   arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444"))
    return q0


# ----------------------------------------------------------------------------- Fig. 2: one scale

_PANEL_W, _BOX_W = 4.0, 1.7                       # a panel, a box (inches)


def _draw_scale(config, shapes, n, title):
    """Fig. 2: one panel for the local features (a) and one for the global feature (b) of P_n."""
    relation = _RELATION_DRAWING[config.relation]
    panels = [p for p in ("local", "global") if (config.local_pool if p == "local" else config.global_pool)]
    width = _PANEL_W * len(panels) + 0.3
    rows = max(6 if (panel == "local" and relation) or (panel == "global" and config.global_pool == "gcp")
               else 2 if panel == "local" else 3 for panel in panels)
    height = 0.9 + 0.8 * rows
    ys = [height - 0.9 - 0.8 * k for k in range(rows)]
    cv = _Canvas(max(width, 4.3), height)
    cv.ax.text(0.15, height - 0.15, title, ha="left", va="center", fontsize=cv.fontsize, style="italic")
    for k, panel in enumerate(panels):
        x0 = 0.15 + k * _PANEL_W
        if panel == "local":
            _scale_local(cv, config, shapes, n, x0, ys)
        elif config.global_pool == "gcp":
            _scale_gcp(cv, config, shapes, n, x0, ys)
        else:
            _scale_pooled(cv, config, shapes, n, x0, ys)
    return cv.fig


def _columns(x0: float) -> tuple[float, float, float]:
    """The left, right and middle box centres of the panel starting at ``x0``."""
    return x0 + 0.1 + _BOX_W / 2, x0 + _PANEL_W - 0.1 - _BOX_W / 2, x0 + _PANEL_W / 2


def _scale_local(cv, config, shapes, n, x0, ys) -> None:
    """(a) How q_1 is made: p_1, and with a relation module r_1, p̄_1, r̄_1, T, R_p and the skip."""
    s, relation = f"P{n}", _RELATION_DRAWING[config.relation]
    left, right, mid = _columns(x0)
    name = relation["title"] if relation else "no relation module"
    cv.ax.text(mid, ys[0] + 0.42, f"(a) {name}: stripe 1 of {s}", ha="center", fontsize=cv.fontsize,
               fontweight="bold")
    p_shape = shapes[f"{s}/p"]
    p1 = cv.box(left, ys[0], _BOX_W, "$p_1$", _dims(p_shape[1:]), f"{s}/p1", "map")
    if not relation:
        q = cv.box(left, ys[1], _BOX_W, r"1×1 conv: $q_1 = \bar{p}_1$", _dims(shapes[f"{s}/q"][1:]), f"{s}/q1",
                   "out")
        cv.arrow(p1, q)
        return
    rest = cv.box(right, ys[0], _BOX_W, f"$p_2 \\ldots p_{{{n}}}$", _dims((p_shape[0] - 1, p_shape[1])),
                  f"{s}/p_rest", "map")
    r1 = cv.box(right, ys[1], _BOX_W, f"$r_1$ = mean of $p_2 \\ldots p_{{{n}}}$", _dims(shapes[f"{s}/r"]),
                f"{s}/r1", "map")
    cv.arrow(rest, r1)
    pb = cv.box(left, ys[2], _BOX_W, r"1×1 conv: $\bar{p}_1$", _dims(shapes[f"{s}/p_bar"][1:]), f"{s}/p_bar1",
                "local")
    rb = cv.box(right, ys[2], _BOX_W, r"1×1 conv: $\bar{r}_1$", _dims(shapes[f"{s}/r_bar"][1:]), f"{s}/r_bar1",
                "local")
    cv.arrow(p1, pb)
    cv.arrow(r1, rb)
    if relation["concat"]:
        t = cv.box(mid, ys[3], _BOX_W, f"${relation['argument']}$", _dims(shapes[f"{s}/R_p_in"]), f"{s}/T", "local")
        cv.arrow(pb, t, dx_b=-0.3)
        cv.arrow(rb, t, dx_b=0.3)
        into = t
    else:
        into = rb
    rp = cv.box(mid, ys[4], _BOX_W, "$R_p$: conv, BN, ReLU", _dims(shapes[f"{s}/R_p_out"]),
                f"{s}/R_p_out", "relation", gid=f"R_p:{s}")
    cv.arrow(into, rp, dx_a=(mid - into["cx"]) * 0.5 if into is rb else 0)
    argument = r"\cdot" if relation["concat"] else relation["argument"]
    q = cv.box(mid, ys[5], _BOX_W, f"$q_1 = \\bar{{p}}_1 + R_p({argument})$", _dims(shapes[f"{s}/q"][1:]),
               f"{s}/q1", "out")
    cv.arrow(rp, q)
    skip_x = x0 + 0.05
    cv.path([(left - _BOX_W / 2, ys[2]), (skip_x, ys[2]), (skip_x, ys[5]), (mid - _BOX_W / 2, ys[5])])
    cv.ax.text(skip_x + 0.05, (ys[3] + ys[4]) / 2, "skip", rotation=90, va="center", ha="left",
               fontsize=cv.fontsize - 1, color="#555555")


def _scale_gcp(cv, config, shapes, n, x0, ys) -> None:
    """(b) GCP: p_max, p_cont, their reductions, T, R_g and the skip to q_0."""
    s = f"P{n}"
    left, right, mid = _columns(x0)
    cv.ax.text(mid, ys[0] + 0.42, f"(b) GCP of {s}", ha="center", fontsize=cv.fontsize, fontweight="bold")
    ps = cv.box(mid, ys[0], _BOX_W, f"$p_1 \\ldots p_{{{n}}}$ (GMP)", _dims(shapes[f"{s}/gcp_in"]), f"{s}/gcp_in",
                "map")
    cont = (r"$(\Sigma_i\, p_i - p_{max})/%d$" % (n - 1)) if config.contrast == "official" else r"$p_{avg} - p_{max}$"
    pmax = cv.box(left, ys[1], _BOX_W, r"$p_{max} = \mathrm{max}_i\, p_i$", _dims(shapes[f"{s}/p_max"]),
                  f"{s}/p_max", "map")
    pcont = cv.box(right, ys[1], _BOX_W, r"$p_{cont}$ = " + cont, _dims(shapes[f"{s}/p_cont"]), f"{s}/p_cont",
                   "map")
    cv.arrow(ps, pmax, dx_a=-0.3)
    cv.arrow(ps, pcont, dx_a=0.3)
    pbm = cv.box(left, ys[2], _BOX_W, r"1×1 conv: $\bar{p}_{max}$", _dims(shapes[f"{s}/p_bar_max"]),
                 f"{s}/p_bar_max", "global")
    pbc = cv.box(right, ys[2], _BOX_W, r"1×1 conv: $\bar{p}_{cont}$", _dims(shapes[f"{s}/p_bar_cont"]),
                 f"{s}/p_bar_cont", "global")
    cv.arrow(pmax, pbm)
    cv.arrow(pcont, pbc)
    t = cv.box(mid, ys[3], _BOX_W, r"$T(\bar{p}_{max}, \bar{p}_{cont})$", _dims(shapes[f"{s}/R_g_in"]),
               f"{s}/T_g", "global")
    cv.arrow(pbm, t, dx_b=-0.3)
    cv.arrow(pbc, t, dx_b=0.3)
    rg = cv.box(mid, ys[4], _BOX_W, "$R_g$: conv, BN, ReLU", _dims(shapes[f"{s}/R_g_out"]), f"{s}/R_g_out",
                "gcp", gid=f"R_g:{s}")
    cv.arrow(t, rg)
    q0 = cv.box(mid, ys[5], _BOX_W, r"$q_0 = \bar{p}_{max} + R_g(\cdot)$", _dims(shapes[f"{s}/q0"]), f"{s}/q0",
                "out")
    cv.arrow(rg, q0)
    cv.path([(left - _BOX_W / 2, ys[2]), (x0 + 0.05, ys[2]), (x0 + 0.05, ys[5]), (mid - _BOX_W / 2, ys[5])])


def _scale_pooled(cv, config, shapes, n, x0, ys) -> None:
    """(b) A plain global feature: x pooled by GMP, GAP or GAP + GMP, then a 1×1 reduction to q_0."""
    s, pool = f"P{n}", _pool_name(config.global_pool)
    _, _, mid = _columns(x0)
    cv.ax.text(mid, ys[0] + 0.42, f"(b) {pool} global feature of {s}", ha="center",
               fontsize=cv.fontsize, fontweight="bold")
    x = cv.box(mid, ys[0], _BOX_W, "feature map x", _dims(shapes["x"], "hwc"), "x", "map")
    pooled = cv.box(mid, ys[1], _BOX_W, f"{pool} of x", _dims(shapes[f"{s}/pooled"]), f"{s}/pooled", "global")
    q0 = cv.box(mid, ys[2], _BOX_W, "1×1 conv: $q_0$", _dims(shapes[f"{s}/q0"]), f"{s}/q0", "out")
    cv.arrow(x, pooled)
    cv.arrow(pooled, q0)
