"""MMDetection integration: ``PruNetBackbone`` and checkpoint loading for mmengine.

Importing this package registers ``PruNetBackbone`` in ``mmdet.registry.MODELS``, which is what
``custom_imports=dict(imports=['prunet.detection'])`` in a config relies on. It also teaches
mmengine's ``CheckpointLoader`` the ``hf-hub:`` scheme, and replaces its local-file loader with a
weights-only one that accepts the few non-tensor types mmengine's own checkpoints hold (with
torch >= 2.6, mmengine 0.10.7 cannot otherwise read the checkpoints it writes).
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
from prunet.detection.checkpoint import register_hf_hub_scheme, register_weights_only_local_loader

register_hf_hub_scheme()
register_weights_only_local_loader()

__all__ = ["PruNetBackbone", "backbone_channels", "register_hf_hub_scheme", "register_weights_only_local_loader"]
