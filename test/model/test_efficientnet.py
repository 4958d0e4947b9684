"""EfficientNet-Lite0: the shipped ImageNet weights load strictly and classify a photo sensibly."""
import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from efm_ros.model.efficientnet import (EfficientNetLite0, SpatialFeatures, load_efficientnet_lite0,
                                        preprocess, pretrained_weights_path)

MILITARY_UNIFORM = 652


def test_strict_load_matches_every_key():
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(state) == 296


def test_grace_hopper_is_a_military_uniform():
    model = load_efficientnet_lite0()
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR))
    with torch.no_grad():
        probs = model(preprocess(torch.from_numpy(img.copy())[None])).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert MILITARY_UNIFORM in top5, top5
    assert top5[0] == MILITARY_UNIFORM     # measured: p = 0.39


@pytest.mark.parametrize("stride,shape", [(8, (40, 12, 12)), (16, (112, 6, 6))])
def test_spatial_feature_map_at_96px(stride, shape):
    feats = SpatialFeatures(stride, pretrained=False).eval()
    x = torch.zeros(2, 96, 96, 3, dtype=torch.uint8)
    assert feats(preprocess(x)).shape == (2, *shape)
