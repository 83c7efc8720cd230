"""Save a sample grid of the shapes dataset (one row per class) with masks, for the model card.

    python scripts/dataset_grid.py data/models/tiny/dataset_grid.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from saliency_lib import data  # noqa: E402
from saliency_lib.plotting import save_figure, show_grid, to_display  # noqa: E402

labels = torch.arange(data.NUM_CLASSES).repeat_interleave(6)
b = data.make_batch("val", 0, len(labels), labels=labels)
imgs = torch.stack([to_display(b.images), b.masks.float().expand(-1, 3, -1, -1)], 1)  # image, mask pairs
imgs = imgs.view(data.NUM_CLASSES, 12, 3, 32, 32).reshape(-1, 3, 32, 32)
fig = show_grid(imgs, nrow=12, row_labels=data.CLASS_NAMES, title="shapes dataset (val split): image, mask pairs")
save_figure(fig, sys.argv[1] if len(sys.argv) > 1 else "dataset_grid.png")
