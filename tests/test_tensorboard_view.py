"""TensorBoard, opened in headless Chromium on a finished sweep of two methods and two seeds: the
screenshots show the Figure 2 diagnostics (each labelled with its x axis), the HParams table (a
row per run with its method and accuracies) and the training features in the projector's PCA
view (``tests/tensorboard_view.py``)."""

import numpy as np
import pytest
import tensorboard_view as view
from PIL import Image

from adarand import train

from conftest import REPO

CHROMIUM = view.find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to screenshot TensorBoard in "
                                                         "(apt install chromium, or $ADARAND_CHROMIUM)")


def test_tensorboard_shows_diagnostics_hparams_and_embedding(tmp_path, cache_dir):
    root = tmp_path / "sweep"
    base = REPO / "yaml" / "base" / "digits_small_cnn.yaml"
    results = [train([base, REPO / "yaml" / "methods" / f"{method}.yaml"],
                     ["train.epochs=2", "data.use_ratio=0.3", f"cache_dir={cache_dir}"], seed=seed,
                     output=root / f"digits_small_cnn-{method}" / f"seed{seed}", quiet=True)
               for method in ("finetune", "adarand") for seed in (0, 1)]
    shots = tmp_path / "shots"
    runs = view.finished_runs(root)
    assert {r["method"] for r in runs} == {"finetune", "adarand"}
    assert sorted(r["test_accuracy"] for r in runs) == sorted(res["test_accuracy"] for res in results)
    wrong = [dict(runs[0], test_accuracy=0.0123)] + runs[1:]
    with view.tensorboard(root) as url, view.browser_page(CHROMIUM) as page:
        assert view.every_view(page, url, shots, runs) == []
        # the check finds a value that is not in the table
        problems = view.view_hparams(page, url, tmp_path / "wrong.png", wrong)
    assert problems == [f"hparams: {runs[0]['trial']}'s test_accuracy 0.01230 not in the table"]
    for name, size in (("diagnostics", view.TALL_VIEWPORT), ("scalars", view.TALL_VIEWPORT),
                       ("hparams", view.WIDE_VIEWPORT),
                       ("projector", view.VIEWPORT)):
        image = np.asarray(Image.open(shots / f"{name}.png").convert("RGB"))
        assert image.shape == (size["height"], size["width"], 3), name
        colours = (image[..., 0].astype(np.int32) << 16) | (image[..., 1].astype(np.int32) << 8) | image[..., 2]
        assert len(np.unique(colours)) > 50, name  # drawn, not a blank page

