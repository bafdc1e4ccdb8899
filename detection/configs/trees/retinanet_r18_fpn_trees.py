# Baseline for the tree-crown smoke comparison: the same detector, data and schedule as
# retinanet_prunet-p0_fpn_trees.py with mmdet's ResNet-18 backbone (random init, BN trained).
_base_ = './retinanet_prunet-p0_fpn_trees.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
