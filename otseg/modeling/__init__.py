"""OTSeg's network, one module per part, and the segmentor that composes them.

Parts: image encoder, text encoder, relationship descriptor, MPSA decoder, head, loss.
"""

from otseg.modeling.decoder import MPSADecoder, MPSADecoderLayer, combine_layer_maps
from otseg.modeling.descriptor import RelationshipDescriptor
from otseg.modeling.head import HeadOutput, OTSegHead
from otseg.modeling.image_encoder import PromptedVisionTransformer, resize_positional_embedding
from otseg.modeling.losses import OTSegLoss, dice_loss, sigmoid_focal_loss
from otseg.modeling.segmentor import IMAGENET_MEAN, IMAGENET_STD, OTSeg, PromptTransport
from otseg.modeling.text_encoder import TEMPLATES, LearnableContext, TextEncoder, templates_for

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TEMPLATES",
    "HeadOutput",
    "LearnableContext",
    "MPSADecoder",
    "MPSADecoderLayer",
    "OTSeg",
    "OTSegHead",
    "OTSegLoss",
    "PromptTransport",
    "PromptedVisionTransformer",
    "RelationshipDescriptor",
    "TextEncoder",
    "combine_layer_maps",
    "dice_loss",
    "resize_positional_embedding",
    "sigmoid_focal_loss",
    "templates_for",
]
