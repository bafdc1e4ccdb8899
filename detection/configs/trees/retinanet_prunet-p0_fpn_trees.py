# RetinaNet-PruNet-P0 on the small real tree-crown set (aerial images shipped by deepforest 2.1.0,
# converted to COCO json by prunet.data.coco_sources). A short CPU schedule from random init:
# it checks the whole detection stack on real data; it is not a COCO result.
#
#   python detection/train.py detection/configs/trees/retinanet_prunet-p0_fpn_trees.py
#
# detection/train.py and test.py build the dataset on first use (under ~/.cache/prunet/data or
# $PRUNET_CACHE/data) and fill in the paths below from `prunet_dataset`.
_base_ = '../retinanet_prunet-p0_fpn_1x_coco.py'

prunet_dataset = dict(name='deepforest_trees', tile=400)
metainfo = dict(classes=('tree', ), palette=[(0, 160, 0)])
img_scale = (320, 320)

# Random init (ImageNet weights are not downloadable on the build machines), all BN layers trained.
# A CPU-sized neck/head (128 channels, 2 stacked convs instead of 256 and 4) keeps an iteration at
# a few seconds on 2 cores; backbone comparisons use this same head. The head gets GroupNorm and
# the optimizer is AdamW: with mmdet's plain head and SGD, training from scratch on this small set
# collapsed to a constant prediction (ResNet-18: mAP 0.001 after 300 iterations, measured here); with GN +
# AdamW it learns (bbox mAP_50 0.052 after 100 iterations, PruNet-P0, measured here).
# Detections are kept down to score 0 (top 100 per image) so that mAP is defined even after a
# handful of iterations.
model = dict(
    backbone=dict(pretrained=None, frozen_stages=-1, norm_eval=False),
    neck=dict(out_channels=128),
    bbox_head=dict(num_classes=1, in_channels=128, feat_channels=128, stacked_convs=2,
                   norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    test_cfg=dict(score_thr=0.0))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', metric='bbox', format_only=False,
                     ann_file='annotations/instances_val.json')
test_evaluator = val_evaluator

# Short iteration-based schedule with warmup; gradient clipping keeps from-scratch training stable.
max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
auto_scale_lr = dict(enable=False, base_batch_size=4)
