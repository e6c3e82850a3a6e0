"""Phrase grounders: tiny random zero-shot detectors (OWL-ViT, OWLv2, Grounding DINO), sidecars, whole image, grid."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.grounders import (
    GENERAL_WORDS,
    GridGrounder,
    PhraseGrounder,
    PrecomputedGrounder,
    WholeImageGrounder,
    ZeroShotDetectorGrounder,
    best_box_per_query,
    clip_box,
    grounding_prompt,
    query_token_positions,
    token_scores_to_query_scores,
)
from fmit_plugin.vision.regions import Phrase, Region

WORDS = ["George", "Zimmerman", "leaves", "Florida", "court", "today"]
PHRASES = [Phrase("George Zimmerman", 0, 1), Phrase("Florida court", 3, 4)]
IMAGE_SIZE = (50, 30)  # width, height: not square, so OWLv2's padding and the clipping matter


def image() -> Image.Image:
    return Image.new("RGB", IMAGE_SIZE, (120, 40, 30))


# ---------------------------------------------------------------------------------------------------------------
# Tiny random detectors written to disk
# ---------------------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte -> printable character table (a byte-level BPE needs every byte in its vocabulary)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes]))


def write_clip_tokenizer(directory: Path, max_length: int = 16):
    """A character-level CLIP tokenizer: every byte is a token, no merges."""
    from transformers import CLIPTokenizer

    characters = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for character in characters:
            vocab[character + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length)
    return tokenizer, vocab


def _image_processor(name: str, **kwargs):
    # The Pil variants need no torchvision (which must not be installed here); older transformers lack them.
    import transformers

    cls = getattr(transformers, name + "Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def write_tiny_owl(directory: Path, version: int) -> Path:
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTProcessor,
    )

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab = write_clip_tokenizer(directory)
    text_config = dict(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision_config = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    config_cls, model_cls, processor_cls, image_processor_name = (
        (OwlViTConfig, OwlViTForObjectDetection, OwlViTProcessor, "OwlViTImageProcessor")
        if version == 1
        else (Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor, "Owlv2ImageProcessor")
    )
    torch.manual_seed(0)
    model = model_cls(config_cls(text_config=text_config, vision_config=vision_config, projection_dim=16))
    # Random box regressions are mostly degenerate boxes far outside the image; with the last layer zeroed every
    # box is its patch's prior box (a 4 x 4 grid over the padded input), so boxes are known and usable.
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(directory)
    size = {"height": 32, "width": 32}
    image_kwargs = {"size": size, "crop_size": size} if version == 1 else {"size": size}
    processor_cls(image_processor=_image_processor(image_processor_name, **image_kwargs), tokenizer=tokenizer)\
        .save_pretrained(directory)
    return directory


GDINO_WORDS = ["george", "zimmerman", "florida", "court", *GENERAL_WORDS, "."]


def write_tiny_grounding_dino(directory: Path) -> Path:
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GDINO_WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=True)
    config = GroundingDinoConfig(
        backbone_config=dict(
            model_type="swin", image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
            window_size=2, out_indices=[2, 3, 4],
        ),
        text_config=dict(
            model_type="bert", vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64,
        ),
        # d_model 32: the input projections use GroupNorm(32, d_model); decoder_layers 2: the box heads of
        # layers > 0 are tied to layer 0's.
        d_model=32, num_queries=12, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(directory)
    # Shortest edge 64: the coarsest feature map must keep more than one value per GroupNorm group.
    image_processor = _image_processor(
        "GroundingDinoImageProcessor", size={"shortest_edge": 64, "longest_edge": 128}
    )
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_owlvit(tmp_path_factory) -> Path:
    return write_tiny_owl(tmp_path_factory.mktemp("owlvit"), version=1)


@pytest.fixture(scope="module")
def tiny_owlv2(tmp_path_factory) -> Path:
    return write_tiny_owl(tmp_path_factory.mktemp("owlv2"), version=2)


@pytest.fixture(scope="module")
def tiny_grounding_dino(tmp_path_factory) -> Path:
    return write_tiny_grounding_dino(tmp_path_factory.mktemp("grounding_dino"))


def check_detector_regions(regions: list[Region]) -> None:
    """Threshold 0: every query gets exactly its best box, inside the image, with the right span."""
    width, height = IMAGE_SIZE
    labels = [region.label for region in regions]
    assert labels == [phrase.text for phrase in PHRASES] + list(GENERAL_WORDS)  # one region per query, in order
    for region in regions:
        assert region.box is not None
        left, top, right, bottom = region.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert 0.0 < region.score <= 1.0
        assert region.grid_cell is None
    for region, phrase in zip(regions, PHRASES):
        assert region.span == (phrase.first_word, phrase.last_word)
    assert all(region.span is None for region in regions[len(PHRASES):])


class ForcedLogits(torch.nn.Module):
    """Wraps a detector and rewrites its logits: only `box` scores high, and only where `hot(inputs)` says."""

    def __init__(self, model: torch.nn.Module, box: int, hot) -> None:
        super().__init__()
        self.inner = model
        self.box = box
        self.hot = hot
        self.outputs = None

    def forward(self, **inputs):
        outputs = self.inner(**inputs)
        logits = torch.full_like(outputs.logits, -10.0)
        logits[0, self.box, self.hot(inputs)] = 10.0
        outputs.logits = logits
        self.outputs = outputs
        return outputs


@pytest.mark.parametrize("model_fixture", ["tiny_owlvit", "tiny_owlv2"])
def test_owl_detectors_ground_every_query_with_its_best_box(model_fixture, request):
    grounder = ZeroShotDetectorGrounder(model_name=str(request.getfixturevalue(model_fixture)), threshold=0.0)
    check_detector_regions(grounder.ground(image(), "1", WORDS, PHRASES))
    assert ZeroShotDetectorGrounder(
        model_name=str(request.getfixturevalue(model_fixture)), threshold=1.01
    ).ground(image(), "1", WORDS, PHRASES) == []


def test_owl_detector_gives_each_query_its_own_best_box(tiny_owlvit, monkeypatch):
    grounder = ZeroShotDetectorGrounder(model_name=str(tiny_owlvit), threshold=0.5)
    person = len(PHRASES) + GENERAL_WORDS.index("person")
    wrapper = ForcedLogits(grounder.model, box=5, hot=lambda inputs: person)
    monkeypatch.setattr(grounder, "model", wrapper)
    regions = grounder.ground(image(), "1", WORDS, PHRASES)
    expected = grounder.processor.post_process_grounded_object_detection(
        wrapper.outputs, threshold=-1.0, target_sizes=[(IMAGE_SIZE[1], IMAGE_SIZE[0])]
    )[0]["boxes"][5].tolist()
    assert [(region.label, region.span) for region in regions] == [("person", None)]
    assert regions[0].box == pytest.approx(clip_box(expected, *IMAGE_SIZE))
    assert regions[0].score == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())


def test_grounding_dino_grounds_every_query_with_its_best_box(tiny_grounding_dino):
    grounder = ZeroShotDetectorGrounder(model_name=str(tiny_grounding_dino), threshold=0.0)
    check_detector_regions(grounder.ground(image(), "1", WORDS, PHRASES))
    grounder.threshold = 1.01
    assert grounder.ground(image(), "1", WORDS, PHRASES) == []


def test_grounding_dino_maps_prompt_tokens_back_to_queries(tiny_grounding_dino, monkeypatch):
    grounder = ZeroShotDetectorGrounder(model_name=str(tiny_grounding_dino), threshold=0.5)
    florida = grounder.processor.tokenizer.convert_tokens_to_ids("florida")
    # Only the token "florida" (of the phrase "Florida court") lights up, on box 7.
    wrapper = ForcedLogits(grounder.model, box=7, hot=lambda inputs: int((inputs["input_ids"][0] == florida)
                                                                         .nonzero()[0, 0]))
    monkeypatch.setattr(grounder, "model", wrapper)
    regions = grounder.ground(image(), "1", WORDS, PHRASES)
    assert [(region.label, region.span) for region in regions] == [("Florida court", (3, 4))]
    expected = grounder.processor.post_process_grounded_object_detection(
        wrapper.outputs, threshold=-1.0, target_sizes=[(IMAGE_SIZE[1], IMAGE_SIZE[0])]
    )[0]["boxes"][7].tolist()
    assert regions[0].box == pytest.approx(clip_box(expected, *IMAGE_SIZE))


def test_grounding_prompt_and_token_mapping_are_pure_functions():
    prompt, spans = grounding_prompt(["George Zimmerman", "St. Louis", "...", "person"])
    assert prompt == "george zimmerman. st louis. person."
    assert [prompt[s[0]:s[1]] if s else None for s in spans] == ["george zimmerman", "st louis", None, "person"]
    # Offsets as a word-level tokenizer gives them: [CLS] george zimmerman . st louis . person . [SEP]
    offsets = [(0, 0), (0, 6), (7, 16), (16, 17), (18, 20), (21, 26), (26, 27), (28, 34), (34, 35), (0, 0)]
    assert query_token_positions(offsets, spans, num_positions=32) == [[1, 2], [4, 5], [], [7]]
    # max_text_len cuts the prompt: "person" is truncated away.
    assert query_token_positions(offsets, spans, num_positions=7) == [[1, 2], [4, 5], [], []]
    probabilities = torch.zeros(3, 10)
    probabilities[0, 2] = 0.9  # box 0: "zimmerman"
    probabilities[2, 7] = 0.6  # box 2: "person"
    probabilities[1, 4] = 0.3  # box 1: "st"
    scores = token_scores_to_query_scores(probabilities, [[1, 2], [4, 5], [], [7]])
    assert scores.shape == (3, 4)
    assert best_box_per_query(scores, threshold=0.5) == [
        (0, pytest.approx(0.9)), None, None, (2, pytest.approx(0.6))
    ]
    assert best_box_per_query(torch.zeros(0, 2), threshold=0.0) == [None, None]


def test_detector_without_general_words_and_out_of_tweet_phrases(tiny_owlvit):
    grounder = ZeroShotDetectorGrounder(model_name=str(tiny_owlvit), threshold=0.0, general_words=False)
    regions = grounder.ground(image(), "1", WORDS, [*PHRASES, Phrase("ghost", 5, 9)])
    assert [region.label for region in regions] == [phrase.text for phrase in PHRASES]
    assert grounder.ground(image(), "1", WORDS, []) == []


def test_detector_cache_key_follows_settings(tiny_owlvit):
    key = ZeroShotDetectorGrounder(model_name=str(tiny_owlvit)).cache_key()
    assert str(tiny_owlvit) in key
    assert key != ZeroShotDetectorGrounder(model_name=str(tiny_owlvit), threshold=0.3).cache_key()
    assert key != ZeroShotDetectorGrounder(model_name=str(tiny_owlvit), general_words=False).cache_key()
    assert key != ZeroShotDetectorGrounder(model_name=str(tiny_owlvit), load_weights=False).cache_key()


def test_unreachable_weights_point_to_the_precomputed_grounder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigurationError, match="precomputed") as error:
        ZeroShotDetectorGrounder(model_name="google/owlv2-base-patch16-ensemble")
    assert "google/owlv2-base-patch16-ensemble" in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Precomputed sidecar
# ---------------------------------------------------------------------------------------------------------------


def write_sidecar(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


SIDECAR = [
    {"image_id": "123", "regions": [
        {"phrase": "George Zimmerman", "span": [0, 1], "box": [5, 2, 20, 25], "score": 0.9},
        {"phrase": "Florida court", "span": [3, 4], "box": [-10, 5, 80, 40]},  # sticks out: clipped
        {"phrase": "person", "span": None, "box": [1, 1, 10, 10], "score": 0.4},
        {"phrase": "ghost", "span": [4, 8], "box": [1, 1, 10, 10]},  # beyond the 6-word tweet: dropped
    ]},
    {"image_id": 456, "regions": []},
]


def test_precomputed_returns_the_sidecar_regions(tmp_path):
    grounder = PrecomputedGrounder(str(write_sidecar(tmp_path / "groundings.jsonl", SIDECAR)))
    regions = grounder.ground(image(), "123", WORDS, phrases=[])  # phrases are ignored
    assert regions == [
        Region("George Zimmerman", (5.0, 2.0, 20.0, 25.0), (0, 1), 0.9),
        Region("Florida court", (0.0, 5.0, 50.0, 30.0), (3, 4), 1.0),
        Region("person", (1.0, 1.0, 10.0, 10.0), None, 0.4),
    ]
    assert grounder.dropped_out_of_range == 1
    assert grounder.ground(image(), "456", WORDS, []) == []
    assert grounder.ground(image(), "unknown", WORDS, []) == []
    grounder.ground(image(), "123", WORDS, [])
    assert grounder.dropped_out_of_range == 2
    # A region entirely outside a smaller image is dropped, not returned with no area.
    small = Image.new("RGB", (4, 4))
    assert grounder.ground(small, "123", WORDS, []) == [Region("person", (1.0, 1.0, 4.0, 4.0), None, 0.4)]
    assert grounder.dropped_outside_image == 2


def test_precomputed_min_score(tmp_path):
    grounder = PrecomputedGrounder(str(write_sidecar(tmp_path / "g.jsonl", SIDECAR)), min_score=0.5)
    assert [r.label for r in grounder.ground(image(), "123", WORDS, [])] == ["George Zimmerman", "Florida court"]


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        '["a list"]',
        '{"regions": []}',
        '{"image_id": "9"}',
        '{"image_id": "9", "regions": [{"span": [0, 0], "box": [0, 0, 1, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "box": [0, 0, 1, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 0]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 0], "box": [0, 0, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 0], "box": [0, 0, "1", 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 0], "box": [5, 0, 5, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 0], "box": [0, 3, 1, 2]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [2, 1], "box": [0, 0, 1, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0], "box": [0, 0, 1, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": [0, 1.5], "box": [0, 0, 1, 1]}]}',
        '{"image_id": "9", "regions": [{"phrase": "x", "span": null, "box": [0, 0, 1, 1], "score": "high"}]}',
        '{"image_id": "123", "regions": []}',  # the same image twice
    ],
)
def test_precomputed_rejects_malformed_lines_with_their_number(tmp_path, bad_line):
    path = write_sidecar(tmp_path / "bad.jsonl", [*SIDECAR, "", bad_line])
    with pytest.raises(ConfigurationError, match=r"bad\.jsonl, line 4"):
        PrecomputedGrounder(str(path))


def test_another_tools_groundings_jsonl_shows_the_expected_line_format(tmp_path):
    # Other generators also write a groundings.jsonl, in other formats (issue 14): JSON, but not ours.
    other = '{"img": "123", "boxes": [[0, 0, 10, 10]], "labels": ["person"]}'
    path = write_sidecar(tmp_path / "groundings.jsonl", [other])
    with pytest.raises(ConfigurationError) as error:
        PrecomputedGrounder(str(path))
    message = str(error.value)
    assert f"{path}, line 1: no 'image_id'" in message
    assert '{"image_id": ..., "regions": [{"phrase", "span", "box", "score"}]}' in message


def test_a_repeated_image_id_is_not_a_format_error(tmp_path):
    path = write_sidecar(tmp_path / "g.jsonl", [*SIDECAR, '{"image_id": "123", "regions": []}'])
    with pytest.raises(ConfigurationError, match="already appeared on line 1") as error:
        PrecomputedGrounder(str(path))
    assert "expects one JSON object" not in str(error.value)


def test_precomputed_missing_file(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot be read"):
        PrecomputedGrounder(str(tmp_path / "absent.jsonl"))


def test_precomputed_cache_key_follows_the_file_content(tmp_path):
    path = write_sidecar(tmp_path / "g.jsonl", SIDECAR)
    key = PrecomputedGrounder(str(path)).cache_key()
    assert key == PrecomputedGrounder(str(path)).cache_key()
    assert key != PrecomputedGrounder(str(path), min_score=0.5).cache_key()
    write_sidecar(path, SIDECAR[:1])
    assert key != PrecomputedGrounder(str(path)).cache_key()


# ---------------------------------------------------------------------------------------------------------------
# Whole image, grid, construction from config
# ---------------------------------------------------------------------------------------------------------------


def test_whole_image_grounds_nothing():
    grounder = WholeImageGrounder()
    assert grounder.ground(image(), "1", WORDS, PHRASES) == []


@pytest.mark.parametrize("k", [1, 3, 7])
def test_grid_cells_cover_the_image_exactly(k):
    grounder = GridGrounder(k=k)
    width, height = 50, 31  # not divisible by k
    regions = grounder.ground(Image.new("RGB", (width, height)), "1", WORDS, PHRASES)
    assert len(regions) == k * k
    assert [region.grid_cell for region in regions] == [(r, c, k) for r in range(k) for c in range(k)]
    assert all(region.span is None and region.label == f"grid {r},{c}" for region, (r, c, _) in
               zip(regions, [region.grid_cell for region in regions]))
    boxes = [region.box for region in regions]
    assert all(box is not None for box in boxes)
    assert sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes if b) == pytest.approx(width * height)
    assert min(b[0] for b in boxes if b) == 0 and max(b[2] for b in boxes if b) == width
    assert min(b[1] for b in boxes if b) == 0 and max(b[3] for b in boxes if b) == height
    for row in range(k):  # neighbours share edges: no gaps, no overlaps
        for col in range(k - 1):
            left, right = regions[row * k + col].box, regions[row * k + col + 1].box
            assert left is not None and right is not None and left[2] == right[0]


def test_grid_rejects_k_below_one():
    with pytest.raises(ConfigurationError):
        GridGrounder(k=0)


def test_every_grounder_builds_from_config(tmp_path, tiny_owlvit):
    sidecar = write_sidecar(tmp_path / "g.jsonl", SIDECAR)
    built = {
        "zero_shot_detector": PhraseGrounder.from_params(
            Params({"type": "zero_shot_detector", "model_name": str(tiny_owlvit), "threshold": 0.2})
        ),
        "precomputed": PhraseGrounder.from_params(Params({"type": "precomputed", "path": str(sidecar)})),
        "whole_image": PhraseGrounder.from_params(Params({"type": "whole_image"})),
        "grid": PhraseGrounder.from_params(Params({"type": "grid", "k": 7})),
    }
    assert isinstance(built["zero_shot_detector"], ZeroShotDetectorGrounder)
    assert built["zero_shot_detector"].threshold == 0.2
    assert isinstance(built["precomputed"], PrecomputedGrounder)
    assert isinstance(built["whole_image"], WholeImageGrounder)
    assert isinstance(built["grid"], GridGrounder) and built["grid"].k == 7
    assert len({grounder.cache_key() for grounder in built.values()}) == 4


@pytest.fixture
def no_hang():
    """A read that blocks (a FIFO) fails the test after 10 s instead of hanging the suite."""
    def expire(signum, frame):
        raise TimeoutError("the sidecar read blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_precomputed_refuses_a_fifo_without_opening_it(tmp_path, no_hang):
    os.mkfifo(tmp_path / "groundings.jsonl")
    with pytest.raises(ConfigurationError, match=r"groundings sidecar .*groundings\.jsonl is a FIFO"):
        PrecomputedGrounder(str(tmp_path / "groundings.jsonl"))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_precomputed_refuses_a_device_without_reading_it(no_hang):
    with pytest.raises(ConfigurationError, match="/dev/zero is a character device: only regular files"):
        PrecomputedGrounder("/dev/zero")


def test_precomputed_refuses_a_folder_and_an_oversized_file(tmp_path):
    with pytest.raises(ConfigurationError, match="is a folder"):
        PrecomputedGrounder(str(tmp_path))
    path = write_sidecar(tmp_path / "g.jsonl", SIDECAR)
    with pytest.raises(ConfigurationError, match=r"over the limit of 100 bytes"):
        PrecomputedGrounder(str(path), max_bytes=100)
    assert PrecomputedGrounder(str(path), max_bytes=path.stat().st_size).regions


def test_precomputed_names_file_and_line_of_text_that_is_not_utf8(tmp_path):
    path = write_sidecar(tmp_path / "latin1.jsonl", SIDECAR)
    line = json.dumps({"image_id": "7", "regions": [{"phrase": "Müller", "span": [0, 0], "box": [0, 0, 1, 1]}]},
                      ensure_ascii=False)  # "ü" is the 44th character
    with open(path, "ab") as handle:
        handle.write(line.encode("latin-1") + b"\n")
    with pytest.raises(ConfigurationError, match=r"latin1\.jsonl, line 3: not UTF-8 \(byte 0xfc at column 44\)"):
        PrecomputedGrounder(str(path))
