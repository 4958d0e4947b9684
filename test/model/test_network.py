"""The EFM network: shapes, backbone options, cached-feature path, checkpoints."""
import dataclasses

import pytest
import torch

from efm_ros.model.network import (EFM, EFMConfig, KeypointTrunk, SpatialSoftmax, coord_channels, load_checkpoint,
                                   random_inputs, save_checkpoint)


def test_forward_shapes_and_size(efm):
    frame, prev, text = random_inputs(efm.config, batch=3)
    with torch.no_grad():
        action_logits, stg_logits = efm(frame, prev, text)
    assert action_logits.shape == (3, 2, 21) and stg_logits.shape == (3, 50)
    assert efm.feature_shape == (40, 12, 12)
    assert isinstance(efm.trunk, KeypointTrunk)              # the default head
    assert 0.3e6 <= efm.num_parameters() <= 2e6            # trainable part, CPU-trainable
    assert all(not p.requires_grad for p in efm.backbone.parameters())


def test_cached_features_path_equals_full_forward(efm):
    frame, prev, text = random_inputs(efm.config, batch=2, seed=3)
    with torch.inference_mode():
        cache = {"cur": efm.backbone_features(frame), "prev": efm.backbone_features(prev)}
        full = efm(frame, prev, text)
        cached = efm.head(cache["cur"], cache["prev"], text)
    for a, b in zip(full, cached):
        assert torch.equal(a, b)


def test_train_mode_keeps_frozen_backbone_in_eval(efm):
    model = EFM(efm.config, load_weights=False)
    model.train()
    assert model.trunk.training and not model.backbone.training
    frame, prev, text = random_inputs(model.config, batch=4)
    a, s = model(frame, prev, text)
    (a.sum() + s.sum()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.trunk.parameters())


def test_random_init_differs_from_pretrained(efm):
    scratch = EFM(dataclasses.replace(efm.config, pretrained=False))
    frame, _, _ = random_inputs(efm.config, batch=1)
    pre_w = efm.backbone.features._conv_stem.weight
    assert not torch.allclose(pre_w, scratch.backbone.features._conv_stem.weight)
    with torch.no_grad():
        assert not torch.allclose(efm.backbone_features(frame), scratch.eval().backbone_features(frame))


def test_config_rejects_unknown_keys_and_bad_frames(efm):
    with pytest.raises(ValueError, match="unknown EFMConfig key"):
        EFMConfig.from_dict({**efm.config.to_dict(), "hiden": 128})
    assert EFMConfig.from_dict(efm.config.to_dict()) == efm.config
    with pytest.raises(ValueError, match="frames must be"):
        efm.backbone_features(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))


def test_checkpoint_round_trip(efm, tmp_path):
    path = save_checkpoint(efm, tmp_path / "policy.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == efm.config
    for (k, v), (k2, v2) in zip(efm.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(ValueError, match="config differs"):
        load_checkpoint(path, dataclasses.replace(efm.config, hidden=128))


def test_spatial_softmax_finds_a_peak():
    ss = SpatialSoftmax(2, 12, 12)
    maps = torch.zeros(1, 2, 12, 12)
    maps[0, 0, 3, 9] = 50.0          # row 3 (y), column 9 (x)
    maps[0, 1, 11, 0] = 50.0
    kp = ss(maps).view(2, 2)         # (x, y) per channel
    grid = coord_channels(12, 12)[0]
    assert torch.allclose(kp[0], torch.stack([grid[0, 3, 9], grid[1, 3, 9]]), atol=1e-4)
    assert torch.allclose(kp[1], torch.stack([grid[0, 11, 0], grid[1, 11, 0]]), atol=1e-4)
    assert torch.allclose(ss(torch.zeros(1, 2, 12, 12)), torch.zeros(1, 4), atol=1e-6)   # flat map: the centre


def test_keypoint_head_uses_the_instruction_and_both_frames(efm):
    torch.manual_seed(0)
    model = EFM(efm.config, load_weights=False).eval()
    torch.nn.init.normal_(model.trunk.film.weight, std=0.5)   # FiLM starts as the identity; perturb it
    cur, prev = torch.randn(2, 40, 12, 12), torch.randn(2, 40, 12, 12)
    t1, t2 = torch.randn(2, 384), torch.randn(2, 384)
    with torch.no_grad():
        base = model.head(cur, prev, t1)[0]
        assert not torch.allclose(base, model.head(cur, prev, t2)[0])
        assert not torch.allclose(base, model.head(cur, cur, t1)[0])


def test_no_history_head_ignores_the_previous_frame(efm):
    model = EFM(dataclasses.replace(efm.config, history=False), load_weights=False).eval()
    cur, text = torch.randn(2, 40, 12, 12), torch.randn(2, 384)
    with torch.no_grad():
        a = model.head(cur, torch.randn(2, 40, 12, 12), text)
        b = model.head(cur, torch.randn(2, 40, 12, 12), text)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_prev_dropout_acts_in_training_only(efm):
    model = EFM(dataclasses.replace(efm.config, prev_dropout=1.0, dropout=0.0), load_weights=False)
    cur, prev, text = torch.randn(2, 40, 12, 12), torch.randn(2, 40, 12, 12), torch.randn(2, 384)
    with torch.no_grad():
        model.train()
        assert torch.equal(model.head(cur, prev, text)[0], model.head(cur, cur, text)[0])   # prev replaced
        model.eval()
        assert not torch.equal(model.head(cur, prev, text)[0], model.head(cur, cur, text)[0])


def test_flatten_trunk_and_checkpoints_from_before_the_trunk_field(tmp_path):
    config = EFMConfig(trunk="flatten", pretrained=False)
    model = EFM(config).eval()
    assert 0.5e6 <= model.num_parameters() <= 2e6
    old = {k: v for k, v in config.to_dict().items() if k not in ("trunk", "keypoints")}
    assert EFMConfig.from_dict(old).trunk == "flatten"         # an old checkpoint's config
    path = save_checkpoint(model, tmp_path / "p.safetensors")
    assert load_checkpoint(path).config.trunk == "flatten"
    with pytest.raises(ValueError, match="unknown trunk"):
        EFM(EFMConfig(trunk="nope", pretrained=False))


def test_hf_backbone_from_a_local_directory(tmp_path):
    """A tiny ViT saved offline stands in for any transformers vision backbone."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    vit_dir = tmp_path / "tiny-vit"
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64)).save_pretrained(vit_dir)
    config = EFMConfig(backbone=f"hf:{vit_dir}", trunk_channels=16, trunk_stride=1)
    model = EFM(config).eval()
    assert model.feature_shape == (32, 4, 4)                      # 96 px frames resized to 32, 8 px patches
    frame, prev, text = random_inputs(config, batch=2)
    with torch.no_grad():
        a, s = model(frame, prev, text)
    assert a.shape == (2, 2, 21) and s.shape == (2, 50)
    scratch = EFM(dataclasses.replace(config, pretrained=False))
    loaded_w = model.backbone.model.embeddings.patch_embeddings.projection.weight
    assert not torch.allclose(loaded_w, scratch.backbone.model.embeddings.patch_embeddings.projection.weight)
    with pytest.raises(FileNotFoundError, match="config.json"):
        EFM(EFMConfig(backbone=f"hf:{tmp_path / 'nowhere'}"))
