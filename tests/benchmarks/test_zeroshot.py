"""The zero-shot protocol: fixed points, a hand-computed case, clip_benchmark parity, the trainer
API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from cloob.benchmarks.tasks.zeroshot.evaluate import zeroshot_eval
from cloob.benchmarks.tasks.zeroshot.protocol import Predictions, build_classifier, metrics
from support.benchmark_data import class_tree, tiny_model, tiny_preprocess, write_tree


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


def test_hand_computed_metrics():
    # 6 images, 6 classes; labels 0,0,1,1,2,5 (class 3, 4 never appear)
    labels = np.array([0, 0, 1, 1, 2, 5])
    top = np.array(
        [
            [0, 1, 2, 3, 4],  # top-1 hit
            [1, 2, 3, 4, 0],  # hit at rank 5
            [1, 0, 2, 3, 4],  # top-1 hit
            [0, 2, 3, 4, 5],  # miss (1 not in top-5)
            [3, 2, 0, 1, 4],  # hit at rank 2
            [5, 0, 1, 2, 3],  # top-1 hit
        ]
    )
    pred = Predictions(labels, top, np.zeros(top.shape), 1.0)
    m = metrics(pred)
    assert m["acc1"] == pytest.approx(3 / 6)
    assert m["acc5"] == pytest.approx(5 / 6)
    # recall per present class: c0 1/2, c1 1/2, c2 0/1, c5 1/1 → mean 0.5
    assert m["mean_per_class_recall"] == pytest.approx(0.5)


class _Oracle(torch.nn.Module):
    """Text tower of a real model; the image tower returns the class embedding the image encodes."""

    def __init__(self, inner, class_vectors: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.class_vectors = class_vectors

    def encode_text(self, tokens):
        return self.inner.encode_text(tokens)

    def encode_image(self, images):
        index = (images[:, 0, 0, 0] * 255).round().long() // 20
        return self.class_vectors[index] * 3.0  # scale must not matter


def test_image_features_equal_to_class_embeddings_score_100(tmp_path, model, tokenizer):
    names = ["cat", "dog", "red car", "tree", "boat", "house", "lamp"]
    for i, name in enumerate(names):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        from PIL import Image

        for j in range(2):
            Image.new("RGB", (8, 8), (20 * i, j, 0)).save(folder / f"{j}.png")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nan image of the {}\n")
    classifier = build_classifier(
        model, tokenizer, names, ["a photo of a {}.", "an image of the {}"]
    )
    oracle = _Oracle(model, classifier)
    result = zeroshot_eval(
        oracle,
        transforms.ToTensor(),
        tokenizer,
        "folder",
        tmp_path / "data",
        templates_file=templates,
    )
    assert result["n_images"] == 14 and result["n_classes"] == 7
    assert result["acc1"] == result["acc5"] == result["mean_per_class_recall"] == 1.0


def test_classifier_is_mean_of_normalised_template_embeddings(model, tokenizer):
    names, templates = ["cat", "dog"], ["a {}.", "the {} here", "my {}!"]
    got = build_classifier(
        model, tokenizer, names, templates, text_batch=4
    )  # batches cross classes
    with torch.no_grad():
        for i, name in enumerate(names):
            emb = F.normalize(
                model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1
            )
            assert torch.allclose(got[i], F.normalize(emb.mean(0), dim=0), atol=1e-6)


def test_parity_with_clip_benchmark(tmp_path, model, tokenizer):
    from clip_benchmark.metrics import zeroshot_classification as cb
    from sklearn.metrics import balanced_accuracy_score
    from torchvision.datasets import ImageFolder

    counts = {f"class_{c}": 3 + c % 3 for c in range(8)}
    write_tree(tmp_path / "data", class_tree(counts, seed=3))
    names = [f"class {c}" for c in range(8)]
    templates = ["a photo of a {}.", "a blurry photo of the {}."]
    (tmp_path / "names.txt").write_text("\n".join(names))
    (tmp_path / "templates.txt").write_text("\n".join(templates))
    preprocess = tiny_preprocess()

    ours = zeroshot_eval(
        model,
        preprocess,
        tokenizer,
        "folder",
        tmp_path / "data",
        classnames_file=tmp_path / "names.txt",
        templates_file=tmp_path / "templates.txt",
        batch_size=7,
    )

    theirs_clf = cb.zero_shot_classifier(
        model, tokenizer, names, [t.replace("{}", "{c}") for t in templates], "cpu", amp=False
    )
    ours_clf = build_classifier(model, tokenizer, names, templates)
    assert (ours_clf.T - theirs_clf).abs().max().item() < 1e-6
    dataset = ImageFolder(str(tmp_path / "data"), transform=preprocess)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    logits, target = cb.run_classification(model, theirs_clf, loader, "cpu", amp=False)
    top5 = logits.topk(5, dim=1).indices
    assert ours["acc1"] == pytest.approx((logits.argmax(1) == target).float().mean().item())
    assert ours["acc5"] == pytest.approx((top5 == target[:, None]).any(1).float().mean().item())
    assert ours["mean_per_class_recall"] == pytest.approx(
        balanced_accuracy_score(target.numpy(), logits.argmax(1).numpy())
    )


def test_zeroshot_eval_restores_training_mode_and_accepts_task_dir(tmp_path, model, tokenizer):
    task = tmp_path / "task"
    write_tree(task / "images", class_tree({"red square": 2, "blue circle": 2, "green star": 1}))
    (task / "classnames.txt").write_text("blue circle\ngreen star\nred square\n")
    (task / "templates.txt").write_text("a picture of a {}.\n")
    model.train()
    try:
        result = zeroshot_eval(model, tiny_preprocess(), tokenizer, "folder", task)
        assert model.training
    finally:
        model.eval()
    assert result["n_images"] == 5 and result["n_classes"] == 3
    assert result["label_rule"] == "folder name = class name"
    assert 0.0 <= result["acc1"] <= 1.0 and result["acc5"] == 1.0  # 3 classes: top-5 covers all


def test_bf16_precision_runs(tmp_path, model, tokenizer):
    write_tree(tmp_path / "d", class_tree({"a": 2, "b": 2}))
    result = zeroshot_eval(
        model, tiny_preprocess(), tokenizer, "folder", tmp_path / "d", precision="amp_bf16"
    )
    assert result["n_images"] == 4
