"""``otseg serve``: a web page that segments any image with any class names and shows the transport plan.

The model side (:mod:`~otseg.serve.session`, :mod:`~otseg.serve.views`, :mod:`~otseg.serve.examples`) needs no
Gradio; the page itself (:mod:`otseg.serve.app`) imports Gradio, the ``app`` extra, when it is built.
"""

from otseg.serve.examples import Example, folder_examples, synthetic_examples
from otseg.serve.session import RequestError, Segmentation, SegmentationSession, ServeLimits, fit_image, read_upload
from otseg.serve.views import ClassView, area_rows, class_view, legend_html

__all__ = [
    "ClassView",
    "Example",
    "RequestError",
    "Segmentation",
    "SegmentationSession",
    "ServeLimits",
    "area_rows",
    "class_view",
    "fit_image",
    "folder_examples",
    "legend_html",
    "read_upload",
    "synthetic_examples",
]
