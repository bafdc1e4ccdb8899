# RetinaNet with a PruNet-P0 backbone on COCO (mmdet's RetinaNet-R50 1x recipe, backbone swapped).
# Levels (1, 2, 3, 4) are strides 4..32, as ResNet's C2..C5; the FPN starts at stride 8 and adds
# P6/P7 from the last backbone level ('on_input'), as mmdet's RetinaNet does.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['prunet.detection'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PruNetBackbone',
        arch='prunet_p0',
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True,
        pretrained=True),  # the zoo's ImageNet weights (prunet.create_model(..., pretrained=True))
    neck=dict(
        in_channels=[64, 96, 256, 704],
        start_level=1,
        add_extra_convs='on_input'))
