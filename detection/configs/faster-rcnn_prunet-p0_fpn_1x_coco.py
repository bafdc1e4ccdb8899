# Faster R-CNN with a PruNet-P0 backbone on COCO (mmdet's Faster R-CNN-R50-FPN 1x recipe, backbone
# swapped). The FPN uses all four levels from stride 4 and adds P6 by max-pooling, as mmdet's does.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['prunet.detection'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PruNetBackbone',
        arch='prunet_p0',
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True,
        pretrained=True),
    neck=dict(in_channels=[64, 96, 256, 704], start_level=0))
