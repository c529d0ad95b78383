"""otseg: OTSeg zero-shot semantic segmentation (multi-prompt Sinkhorn attention) on open_clip and otkit.

The public API: model configs and presets, the builders and :func:`load_otseg` (a model from any source),
CLIP weights, model files, and the predictor. Training and evaluation live in :mod:`otseg.engine`, datasets in
:mod:`otseg.data`, the network's parts in :mod:`otseg.modeling`, the CPU demo in :mod:`otseg.demo`.
"""

from otseg.build import LoadedModel, build_otseg, build_otseg_vit_b16, load_otseg, otseg_model_registry
from otseg.checkpoint import load_paper_checkpoint, read_model_metadata, save_model
from otseg.config import ModelConfig, get_model_config, list_models
from otseg.modeling.segmentor import OTSeg
from otseg.predictor import InferenceSettings, OTSegPredictor
from otseg.presets import list_presets, load_preset, register_preset

__all__ = [
    "InferenceSettings",
    "LoadedModel",
    "ModelConfig",
    "OTSeg",
    "OTSegPredictor",
    "build_otseg",
    "build_otseg_vit_b16",
    "get_model_config",
    "list_models",
    "list_presets",
    "load_otseg",
    "load_paper_checkpoint",
    "load_preset",
    "otseg_model_registry",
    "read_model_metadata",
    "register_preset",
    "save_model",
]

__version__ = "0.2.0"
