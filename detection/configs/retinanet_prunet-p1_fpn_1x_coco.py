# RetinaNet with a PruNet-P1 backbone on COCO; see retinanet_prunet-p0_fpn_1x_coco.py.
_base_ = './retinanet_prunet-p0_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='prunet_p1'),
    neck=dict(in_channels=[64, 96, 256, 704]))
