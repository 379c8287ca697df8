"""The last-block shortcut is exact: with it installed (and the text trim), a training step's
features and every parameter's gradient equal plain open_clip's, for each bundled ViT family,
with and without gradient checkpointing; towers it cannot shortcut are left alone."""

from __future__ import annotations

import copy
import pickle

import open_clip
import pytest
import torch

import cloob.trainer.models  # noqa: F401 - registers the bundled 64 px configs with open_clip
from cloob.common.last_block import install_image_shortcut
from cloob.common.text import install, trim_padding

CAPTIONS = [
    "a red circle",
    "a small blue square on a green background with a yellow border",
    "x",
    "two green triangles",
]


def _image_size(model) -> tuple[int, int]:
    size = model.visual.image_size
    return size if isinstance(size, tuple) else (size, size)


def _step(model, images, tokens, weights):
    """Features and gradients of a loss that reads every feature coordinate."""
    model.zero_grad(set_to_none=True)
    image_features, text_features, _ = model(images, tokens)
    ((image_features * weights[0]).sum() + (text_features * weights[1]).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return image_features.detach(), text_features.detach(), grads


@pytest.mark.parametrize(
    ("name", "checkpointing"), [("micro-vit", False), ("micro-vit", True), ("tiny-vit", False)]
)
def test_features_and_gradients_equal_plain_open_clip(name, checkpointing):
    torch.manual_seed(0)
    plain = open_clip.create_model(name)
    plain.set_grad_checkpointing(checkpointing)
    ours = copy.deepcopy(plain)
    keys = set(plain.state_dict())
    assert install_image_shortcut(ours) and install(ours)
    tokens = open_clip.get_tokenizer(name)(CAPTIONS)
    images = torch.randn(len(CAPTIONS), 3, *_image_size(plain))
    weights = torch.randn(2, len(CAPTIONS), plain.text_projection.shape[1])

    ref_img, ref_txt, ref_grads = _step(plain, images, tokens, weights)
    img, txt, grads = _step(ours, images, trim_padding(tokens), weights)

    torch.testing.assert_close(img, ref_img, rtol=0, atol=1e-6)
    torch.testing.assert_close(txt, ref_txt, rtol=0, atol=1e-6)
    assert grads.keys() == ref_grads.keys()  # the last blocks' weights all still get gradients
    for n, g in grads.items():
        scale = ref_grads[n].abs().max().clamp_min(1e-12)
        assert (g - ref_grads[n]).abs().max() / scale < 1e-5, n
    assert set(ours.state_dict()) == keys  # checkpoints stay open_clip's


def test_paper_size_vit_features_equal_plain_open_clip():
    """ViT-B/32 at 224 px, forward only (its backward costs a minute on a shared 2-core machine;
    the gradient path is the same code as for the bundled families above)."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu").eval()
    images = torch.randn(2, 3, *_image_size(model))
    with torch.no_grad():
        want = model.encode_image(images)
        assert install_image_shortcut(model)
        got = model.encode_image(images)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_shortcuts_follow_copies_and_pickles():
    torch.manual_seed(0)
    model = open_clip.create_model("micro-vit").eval()
    assert install_image_shortcut(model) and install(model)
    images = torch.randn(2, 3, *_image_size(model))
    tokens = trim_padding(open_clip.get_tokenizer("micro-vit")(CAPTIONS[:2]))
    with torch.no_grad():
        want = model(images, tokens)
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert other.visual.forward.args[0] is other.visual  # rebound, not the original's
            assert other.encode_text.args[0] is other
            got = other(images, tokens)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_towers_without_class_token_pooling_are_left_alone():
    resnet = open_clip.create_model("micro-rn")
    assert not install_image_shortcut(resnet)
    vit = open_clip.create_model("micro-vit")
    vit.visual.pool_type = "avg"  # mean of the patch tokens reads every token of the last block
    assert not install_image_shortcut(vit)
    assert "forward" not in vars(vit.visual) and "forward" not in vars(resnet.visual)
