"""otseg: OTSeg zero-shot semantic segmentation (multi-prompt Sinkhorn attention) on open_clip and otkit."""

from otseg.build import build_otseg, build_otseg_vit_b16, otseg_model_registry
from otseg.checkpoint import load_model, load_paper_checkpoint, save_model
from otseg.config import ModelConfig, get_model_config, list_models
from otseg.inference import InferenceSettings, OTSegPredictor
from otseg.modeling.otseg import OTSeg

__all__ = [
    "InferenceSettings",
    "ModelConfig",
    "OTSeg",
    "OTSegPredictor",
    "build_otseg",
    "build_otseg_vit_b16",
    "get_model_config",
    "list_models",
    "load_model",
    "load_paper_checkpoint",
    "otseg_model_registry",
    "save_model",
]

__version__ = "0.1.0"
