"""MMDetection integration: ``PruNetBackbone`` and checkpoint loading for mmengine.

Importing this package registers ``PruNetBackbone`` in ``mmdet.registry.MODELS``, which is what
``custom_imports=dict(imports=['prunet.detection'])`` in a config relies on. It also teaches
mmengine's ``CheckpointLoader`` the ``hf-hub:`` scheme (a new scheme; none of mmengine's own is
replaced), and adds the few non-tensor types mmengine's own checkpoints hold to torch's
weights-only allow-list (with torch >= 2.6, mmengine 0.10.7 cannot otherwise read the
checkpoints it writes).
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
from prunet.detection.checkpoint import allow_mmengine_checkpoints, register_hf_hub_scheme

register_hf_hub_scheme()
allow_mmengine_checkpoints()

__all__ = ["PruNetBackbone", "allow_mmengine_checkpoints", "backbone_channels", "register_hf_hub_scheme"]
