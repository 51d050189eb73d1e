"""Figures for the book. Every figure function returns a matplotlib Figure (``forest`` draws on
the axes it is given) and never calls ``plt.show()``; figures only draw: the numbers behind
them come from :mod:`rrid.explain`, :mod:`rrid.cost`, :mod:`rrid.retrieval`,
:mod:`rrid.stats` and :mod:`rrid.paper`.

* :mod:`rrid.viz.style`: ``use_style`` (the one style of every figure), ``MATCH`` / ``NON_MATCH``.
* :mod:`rrid.viz.ranking`: ``retrieval_grid`` (Fig. 4), ``retrieval_comparison`` (Fig. 5),
  ``activation_maps``, ``cmc_curve``, ``ap_histogram``, ``ranking_toy``.
* :mod:`rrid.viz.relation`: ``relation_activation_maps`` (Fig. 6) and the widget figures of the
  relation module and GCP: ``rest_composition``, ``relation_on_off``, ``relation_cost``, ``gcp_panel``.
* :mod:`rrid.viz.tables`: ``table1_tradeoff``, ``market1501_landscape``, ``seed_strip``, ``forest``.
* :mod:`rrid.viz.diagram`: ``architecture``, the network with the shapes of its own forward
  pass (Figs. 1 and 2).
* :mod:`rrid.viz.augmentation`: ``augmentation_batch``, images through the training transform.
* :mod:`rrid.viz.live`: ``LivePlot``, the training curves as ``rrid.fit`` runs.
* :mod:`rrid.viz.widgets`: ``interact`` (widgets that also work on the static pages) and
  ``is_static`` (the one switch between a live kernel and a static page).
"""

from rrid.viz.augmentation import ERASING_LABELS, augmentation_batch
from rrid.viz.diagram import architecture
from rrid.viz.live import LivePlot
from rrid.viz.ranking import activation_maps, ap_histogram, cmc_curve, ranking_toy, retrieval_comparison, retrieval_grid
from rrid.viz.relation import gcp_panel, relation_activation_maps, relation_cost, relation_on_off, rest_composition
from rrid.viz.style import MATCH, NON_MATCH, use_style
from rrid.viz.tables import forest, market1501_landscape, seed_strip, table1_tradeoff
from rrid.viz.widgets import StaticInteract, interact, is_static

__all__ = ["use_style", "MATCH", "NON_MATCH", "retrieval_grid", "retrieval_comparison", "activation_maps",
           "cmc_curve", "ap_histogram", "ranking_toy", "relation_activation_maps", "rest_composition",
           "relation_on_off", "relation_cost", "gcp_panel", "table1_tradeoff", "market1501_landscape", "seed_strip",
           "forest", "architecture", "augmentation_batch", "ERASING_LABELS", "LivePlot", "interact", "is_static",
           "StaticInteract"]
