"""prunet: PruNet/GPUNet as timm models, inference-aware NAS with tiered pruning, deployment tools.

``import prunet`` registers the zoo with timm (``timm.create_model('prunet_p0')``).
"""

from prunet import arch
from prunet.zoo import build, create_model, list_models

__version__ = "0.1.0"
__all__ = ["arch", "build", "create_model", "list_models", "__version__"]
