"""MMDetection integration: ``PruNetBackbone`` and the ``hf-hub:`` checkpoint scheme.

Importing this package registers ``PruNetBackbone`` in ``mmdet.registry.MODELS``, which is what
``custom_imports=dict(imports=['prunet.detection'])`` in a config relies on.
"""
try:
    import mmdet  # noqa: F401
    import mmengine  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "prunet.detection needs mmdet==3.3.0, mmengine==0.10.7 and mmcv==2.1.0 with compiled ops; "
        "install them with `bash detection/install_mmcv.sh <venv python>` (or `make setup-detection`)"
    ) from e

from prunet.detection.backbone import PruNetBackbone, backbone_channels
from prunet.detection.checkpoint import register_hf_hub_scheme

register_hf_hub_scheme()

__all__ = ["PruNetBackbone", "backbone_channels", "register_hf_hub_scheme"]
