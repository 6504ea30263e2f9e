"""Foundation-model adapters: images or text to vectors, batched, deterministic, offline.

``EfficientNetLite0Encoder`` (ImageNet weights shipped in a pip package, 1280-d) for images,
``MiniLMEncoder`` (all-MiniLM-L6-v2 shipped in a pip package, 384-d) for text, and
``TorchModuleEncoder`` for any ``torch.nn.Module`` the user already has.
"""

from sae.encoders.base import Encoder, TorchModuleEncoder
from sae.encoders.images import EfficientNetLite0Encoder, load_image, thumbnail, to_rgb_uint8
from sae.encoders.text import MiniLMEncoder

__all__ = [
    "EfficientNetLite0Encoder",
    "Encoder",
    "MiniLMEncoder",
    "TorchModuleEncoder",
    "load_image",
    "thumbnail",
    "to_rgb_uint8",
]
