"""plots.save_figure: the tight layout's image, drawn once."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from gkdrl.runners import plots  # pylint: disable=g-import-not-at-top


def _figure_and_draw_count():
  """A figure whose long labels need the tight layout, and a draw counter."""
  fig, axes = plt.subplots(1, 2, figsize=(6, 3))
  for ax in axes:
    ax.plot([0, 1, 2], [10_000_000, 30_000_000, 20_000_000])
    ax.set_ylabel("a long label on the left of the axes")
  fig.suptitle("title")
  draws = []
  fig.canvas.mpl_connect("draw_event", draws.append)
  return fig, draws


def test_save_figure_writes_the_tight_layout_image_with_one_draw(tmp_path):
  fig, plain_draws = _figure_and_draw_count()
  fig.tight_layout()
  fig.savefig(tmp_path / "plain.png", dpi=50)
  plt.close(fig)

  fig, draws = _figure_and_draw_count()
  plots.save_figure(fig, tmp_path / "saved.png", dpi=50)

  np.testing.assert_array_equal(
      matplotlib.image.imread(tmp_path / "saved.png"),
      matplotlib.image.imread(tmp_path / "plain.png"))
  # savefig's dry-run draw for the placeholder engine tight_layout leaves.
  assert len(plain_draws) == 2
  assert len(draws) == 1
  assert not plt.fignum_exists(fig.number)


def test_save_figure_lays_the_figure_out(tmp_path):
  fig, _ = _figure_and_draw_count()
  fig.savefig(tmp_path / "untouched.png", dpi=50)
  plt.close(fig)
  fig, _ = _figure_and_draw_count()
  plots.save_figure(fig, tmp_path / "saved.png", dpi=50)
  assert not np.array_equal(
      matplotlib.image.imread(tmp_path / "saved.png"),
      matplotlib.image.imread(tmp_path / "untouched.png"))
