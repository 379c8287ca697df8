"""The text-padding trim is exact: trimmed text embeddings (unit vectors, as the objectives and
zero-shot use them) equal the untrimmed model's to ≤1e-6 for
every bundled model family, and the model's state dict (so its checkpoints) is unchanged."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch

import cloob.trainer.models  # noqa: F401 - registers the bundled 64 px configs with open_clip
from cloob.common.text import encode_text, install, trim_padding, trimmable

CAPTIONS = ["a red circle", "a small blue square on a green background with a yellow border", "x"]


# The paper-size towers are the slow set's (they took minutes of the default suite's time):
# the bundled families above run the same trimming code, the big ones only confirm it at size.
@pytest.mark.parametrize(
    "name",
    [
        "micro-vit",
        "micro-rn",
        "tiny-vit",
        "tiny-rn",
        pytest.param("RN50-quickgelu", marks=pytest.mark.slow),
        pytest.param("ViT-B-32-quickgelu", marks=pytest.mark.slow),
    ],
)
def test_trimmed_text_features_equal_the_full_context(name):
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    tokens = open_clip.get_tokenizer(name)(CAPTIONS)
    assert trimmable(model)
    trimmed = trim_padding(tokens)
    assert trimmed.shape[1] < tokens.shape[1] and torch.equal(
        trimmed, tokens[:, : trimmed.shape[1]]
    )
    with torch.no_grad():
        full = model.encode_text(tokens, normalize=True)
        ours = encode_text(model, tokens, normalize=True)
        keys = set(model.state_dict())
        assert install(model)
        size = model.visual.image_size
        images = torch.randn(len(CAPTIONS), 3, *(size if isinstance(size, tuple) else (size, size)))
        _, text_features, _ = model(
            images, trimmed
        )  # the training path: tokens trimmed on the host
        clone = copy.deepcopy(model)  # the installed method follows the copy
        cloned = clone(images, trimmed)[1]
    torch.testing.assert_close(ours, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(text_features, full, rtol=0, atol=1e-6)
    assert torch.equal(cloned, text_features)
    assert set(model.state_dict()) == keys  # open_clip loads our checkpoints as before


def test_towers_that_do_not_pool_at_the_end_of_text_are_left_alone():
    model = open_clip.create_model("micro-vit")
    model.text_pool_type = "last"
    tokens = open_clip.get_tokenizer("micro-vit")(CAPTIONS)
    assert not trimmable(model) and not install(model)
    with torch.no_grad():
        assert torch.equal(encode_text(model, tokens), model.encode_text(tokens))
