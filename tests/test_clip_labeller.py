"""The CLIP-style labeller (ingest/labelling/clip.py, `neurflow label clip`).

No real CLIP weights exist on the machines this is developed on (weights cannot be downloaded), so these
tests run a real open_clip model, a tiny ViT image tower and transformer text tower registered with
`open_clip.add_model_config`, with RANDOM weights saved to a local file. Random weights test the
plumbing (loading local weights, prompts, batching, the score formula, the graph writes), not label
quality: whether CLIP's labels of neuron groups are any good is not measured here.

The tests that need open_clip skip, saying so, only when it is not installed (the optional extra:
pip install 'neurflow-graph[clip]'); the others run anyway. The end-to-end test puts a small synthetic
circuit into a real Neo4j (the `driver` fixture) with its patch images in the real S3 server and a local
directory (the LLM labeller's fixture, reused), runs the command, and recomputes every stored score
independently from the exemplar ids the labels record.
"""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from graphmodel.labels import read_labels, set_label
from ingest.labelling import clip
from tests import test_mllm_labeller
from tests.test_mllm_labeller import first_patch, patch_png


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


needs_open_clip = pytest.mark.skipif(
    not installed("open_clip"),
    reason="open_clip_torch is not installed (optional extra: pip install 'neurflow-graph[clip]')",
)
# The LLM labeller's synthetic run in Neo4j, patch images half in S3 and half in a directory; reused.
labelled_run = test_mllm_labeller.labelled_run

ARCH = "neurflow-test-tiny-clip"
TINY = {  # a real open_clip CLIP, just small: 2-layer ViT on 32x32 images, 2-layer text transformer
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
LOGIT_SCALE = 50.0  # stored in the weights file, so the temperature is seen to come from the file
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(architecture name, weights file, the model whose state dict the file holds)."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(LOGIT_SCALE))
    weights = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), weights)
    return ARCH, weights, model.eval()


@pytest.fixture(scope="module")
def loaded(tiny):
    return clip.load_clip(tiny[0], tiny[1], "cpu")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (a hub download) fails the test."""

    def refuse(_sock, address):
        raise AssertionError(f"tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


_TEXT: dict[tuple, np.ndarray] = {}


def expected_scores(model, images: list[Image.Image], vocabulary, templates, logit_scale) -> tuple:
    """(cosine [V], probability [V]) of one group, computed without ingest.labelling.clip: 32x32 images
    (already the model's size) normalised by hand, one prompt at a time, numpy for the rest."""
    import open_clip

    key = (id(model), tuple(vocabulary), tuple(templates))
    with torch.no_grad():
        pixels = [(np.asarray(im, np.float64) / 255.0 - OPENAI_MEAN) / OPENAI_STD for im in images]
        batch = torch.tensor(np.stack(pixels).transpose(0, 3, 1, 2), dtype=torch.float32)
        image = unit(unit(model.encode_image(batch).double().numpy()).mean(axis=0))
        if key not in _TEXT:
            tokenizer = open_clip.get_tokenizer(ARCH)
            encode = lambda prompt: unit(model.encode_text(tokenizer([prompt])).double().numpy()[0])  # noqa: E731
            _TEXT[key] = np.stack(
                [unit(np.mean([encode(t.format(c)) for t in templates], axis=0)) for c in vocabulary]
            )
    cosine = _TEXT[key] @ image
    logits = logit_scale * cosine
    probability = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return cosine, probability


def square(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


# -------------------------------------------------------------------------- no open_clip needed


def test_without_open_clip_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(clip.ClipError, match=r"pip install open_clip_torch"):
        clip.load_clip("ViT-B-32", tmp_path / "w.pt", "cpu")


def test_vocabulary_from_a_comma_list_or_a_file(tmp_path):
    assert clip.load_vocabulary(" stripes, Wings ,flower,,stripes, red  fur") == [
        "stripes",
        "Wings",
        "flower",
        "red fur",
    ]
    words = tmp_path / "words.txt"
    words.write_text("# animals\ndog\n\ncat  # a pet\nDog\nspotted fur\n")
    assert clip.load_vocabulary(str(words)) == ["dog", "cat", "spotted fur"]
    with pytest.raises(clip.ClipError, match="at least two"):
        clip.load_vocabulary("dog, DOG")
    with pytest.raises(clip.ClipError, match=r"exactly one \{\}"):
        clip.check_templates(["a photo of {} and {}."])


# ----------------------------------------------------------------------------------- loading


@needs_open_clip
def test_weights_load_from_the_local_file(tiny, loaded, no_network):
    _arch, weights, model = tiny
    again = clip.load_clip(tiny[0], str(weights), "cpu")  # under no_network: nothing is fetched
    saved = model.state_dict()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert again.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-6)
    assert again.weights == weights.resolve() and not again.model.training


@needs_open_clip
def test_a_missing_mismatched_or_foreign_weights_file_fails_clearly(tiny, tmp_path, no_network):
    import open_clip

    arch = tiny[0]
    with pytest.raises(clip.ClipError, match="does not exist"):
        clip.load_clip(arch, tmp_path / "nowhere.pt", "cpu")
    other = {**TINY, "embed_dim": 16}
    (tmp_path / "neurflow-test-other-clip.json").write_text(json.dumps(other))
    open_clip.add_model_config(tmp_path / "neurflow-test-other-clip.json")
    torch.save(open_clip.create_model("neurflow-test-other-clip").state_dict(), tmp_path / "other.pt")
    with pytest.raises(
        clip.ClipError, match=f"other.pt into the {arch} architecture: 2 tensors of another shape"
    ):
        clip.load_clip(arch, tmp_path / "other.pt", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(clip.ClipError, match=r"junk.pt .* cannot read it \(Unsupported operand"):
        clip.load_clip(arch, tmp_path / "junk.pt", "cpu")
    with pytest.raises(clip.ClipError, match="not a hub or directory reference"):
        clip.load_clip("hf-hub:laion/CLIP-ViT-B-32", tiny[1], "cpu")
    with pytest.raises(clip.ClipError, match="open_clip has no architecture 'ViT-Q-99'"):
        clip.load_clip("ViT-Q-99", tiny[1], "cpu")


# ----------------------------------------------------------------------------------- scores


@needs_open_clip
def test_scores_are_softmax_of_logit_scale_times_cosine(tiny, loaded):
    vocabulary = ["stripes", "wings", "flower", "spotted fur"]
    templates = ["a photo of {}.", "a close-up photo of {}."]
    images = {f"p{i}": square(i) for i in range(7)}
    groups = [("r/l/g0", ["p0", "p1", "p2"]), ("r/l/g1", ["p2", "p3", "p4", "p5", "p6"]), ("r/l/g2", ["p6"])]
    labels = clip.label_groups(
        loaded,
        groups,
        images,
        vocabulary,
        templates=templates,
        top=4,
        batch_size=3,  # 7 patches, 3 chunks
    )
    assert [(lab.group_id, lab.rank) for lab in labels] == [(g, r) for g, _ in groups for r in (1, 2, 3, 4)]
    for gid, pids in groups:
        cosine, probability = expected_scores(tiny[2], [images[p] for p in pids], vocabulary, templates, 50.0)
        mine = [lab for lab in labels if lab.group_id == gid]
        assert [lab.concept for lab in mine] == [vocabulary[v] for v in np.argsort(-probability)]
        for lab in mine:
            v = vocabulary.index(lab.concept)
            assert lab.method == "clip"
            assert lab.score == pytest.approx(probability[v], abs=2e-5)
            assert lab.details["cosine"] == pytest.approx(cosine[v], abs=2e-5)
            assert lab.details["vocabulary_size"] == 4 and lab.details["exemplars"] == len(pids)
            assert lab.details["exemplar_ids"] == pids and lab.details["logit_scale"] == pytest.approx(50.0)
        assert sum(lab.score for lab in mine) == pytest.approx(1.0, abs=1e-5)
    top2 = clip.label_groups(loaded, groups, images, vocabulary, templates=templates, top=2)
    assert [(lab.group_id, lab.concept) for lab in top2] == [
        (lab.group_id, lab.concept) for lab in labels if lab.rank <= 2
    ]
    assert [lab.score for lab in top2] == pytest.approx(
        [lab.score for lab in labels if lab.rank <= 2], abs=1e-6
    )


# ------------------------------------------------------------------------------ end to end (slow)


def invoke(*args: str):
    from click.testing import CliRunner

    from ingest.cli.label_clip import clip_command

    return CliRunner().invoke(clip_command, list(args), catch_exceptions=False)


def png_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)


@needs_open_clip
@pytest.mark.slow
def test_labels_land_in_the_graph(tiny, labelled_run, driver):
    circuit = labelled_run
    run_id = circuit.run_id
    set_label(driver, circuit.neuron_groups[0].ng_id, "kept by hand")
    vocabulary = ["stripes", "wings", "flower"]
    args = ["--run", run_id, "--clip-model", tiny[0], "--clip-weights", str(tiny[1])]
    args += ["--vocabulary", ",".join(vocabulary), "--top", "2", "--exemplars", "4", "--device", "cpu"]
    result = invoke(*args, "--semantic-groups")
    assert result.exit_code == 0, result.output
    labels = read_labels(driver, run_id, method="clip")
    ngs, sgs = circuit.neuron_groups, circuit.semantic_groups
    assert set(labels) == {g.ng_id for g in ngs} | {s.sg_id for s in sgs}
    assert f"{2 * len(labels)} clip labels on {len(labels)} groups" in result.output
    members = {g.ng_id: {p for sg in sgs if sg.sg_id in g.sg_ids for p in sg.patch_ids} for g in ngs}
    for g in ngs:
        ids = labels[g.ng_id][0].details["exemplar_ids"]
        assert ids[0] == first_patch(circuit, g) and set(ids) <= members[g.ng_id]
        assert len(ids) == min(4, len(members[g.ng_id]))
    for s in sgs:
        assert labels[s.sg_id][0].details["exemplar_ids"] == s.patch_ids[:4]
    for mine in labels.values():  # every stored score, recomputed from the patch images it names
        ids = mine[0].details["exemplar_ids"]
        images = [png_image(patch_png(pid)) for pid in ids]
        _, probability = expected_scores(tiny[2], images, vocabulary, clip.DEFAULT_TEMPLATES, LOGIT_SCALE)
        assert [(lab.rank, lab.concept) for lab in mine] == [
            (r, vocabulary[v]) for r, v in enumerate(np.argsort(-probability)[:2], start=1)
        ]
        for lab in mine:
            assert lab.score == pytest.approx(probability[vocabulary.index(lab.concept)], abs=1e-4)
    again = invoke(*args)  # neuron groups only: replaces the clip labels, keeps the manual one
    assert again.exit_code == 0, again.output
    assert set(read_labels(driver, run_id, method="clip")) == {g.ng_id for g in ngs}
    assert [lab.concept for lab in read_labels(driver, run_id, method="manual")[ngs[0].ng_id]] == [
        "kept by hand"
    ]
    bad = invoke(
        "--run", run_id, "--clip-model", "ViT-Q-99", "--clip-weights", str(tiny[1]), "--vocabulary", "a,b"
    )
    assert bad.exit_code == 1 and "open_clip has no architecture 'ViT-Q-99'" in bad.output
