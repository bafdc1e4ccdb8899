# FCOS with a PruNet-P0 backbone on COCO (mmdet's FCOS-R50 GN-head 1x recipe, backbone swapped).
# The FPN starts at stride 8 and builds P6/P7 from its own P5 ('on_output'), as FCOS does.
# PruNet was trained on RGB images normalised with ImageNet mean/std, unlike the caffe-style
# ResNet of the base config, so the data preprocessor is replaced too.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'

custom_imports = dict(imports=['prunet.detection'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='PruNetBackbone',
        arch='prunet_p0',
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True,
        pretrained=True),
    neck=dict(
        in_channels=[64, 96, 256, 704],
        start_level=1,
        add_extra_convs='on_output',
        relu_before_extra_convs=True))
