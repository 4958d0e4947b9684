"""The EFM network: shapes, backbone options, cached-feature path, checkpoints."""
import dataclasses

import pytest
import torch

from efm_ros.model.network import EFM, EFMConfig, load_checkpoint, random_inputs, save_checkpoint


def test_forward_shapes_and_size(efm):
    frame, prev, text = random_inputs(efm.config, batch=3)
    with torch.no_grad():
        action_logits, stg_logits = efm(frame, prev, text)
    assert action_logits.shape == (3, 2, 21) and stg_logits.shape == (3, 50)
    assert efm.feature_shape == (40, 12, 12)
    assert 0.5e6 <= efm.num_parameters() <= 2e6            # trainable part, CPU-trainable
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
