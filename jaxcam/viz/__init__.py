"""Pictures of class activation maps: overlays, per-exit grids, a static HTML gallery, PNG files.

* :func:`show_cam_on_image` is pytorch-grad-cam's function of the same name, pixel for pixel;
  :func:`overlay_batch` does the same blend for a whole batch on device arrays (jittable)
  (:mod:`jaxcam.viz.overlay`).
* :func:`exit_grid` draws one image and the map of each exit of a multi-exit model, labelled
  (:mod:`jaxcam.viz.grid`).
* :func:`write_gallery` writes ``index.html`` linking such grids (:mod:`jaxcam.viz.gallery`).
* :func:`write_png` writes a picture (:mod:`jaxcam.viz.png`).
* :func:`show_factorization_on_image` draws DFF concepts (:mod:`jaxcam.viz.factorization`).

NumPy and OpenCV appear only here, at the edge where pictures are made.
"""

from jaxcam.viz.factorization import create_labels_legend, show_factorization_on_image
from jaxcam.viz.gallery import write_gallery
from jaxcam.viz.grid import exit_grid
from jaxcam.viz.overlay import colormap_lut, overlay_batch, show_cam_on_image, to_float_image
from jaxcam.viz.png import write_png

__all__ = ["show_cam_on_image", "overlay_batch", "colormap_lut", "exit_grid", "write_gallery",
           "to_float_image", "write_png", "show_factorization_on_image", "create_labels_legend"]
