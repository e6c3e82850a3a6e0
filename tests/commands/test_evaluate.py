"""`allennlp evaluate --predictions-output-file`: lines in input order, each joinable to its tweet."""
import json

from fmit_plugin.commands.evaluate import evaluate_archive
from tests.bad_input_helpers import write_run


def test_prediction_lines_are_in_input_order_with_image_id_and_gold_tags(tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    # Tweets of very different lengths, so that batching by length reorders them.
    blocks, expected = [], []
    for index, length in enumerate([9, 1, 14, 3, 7, 2, 11, 5, 1, 6]):
        words = [f"w{index}_{k}" for k in range(length)]
        tags = ["B-PER" if k == 0 else "O" for k in range(length)]
        blocks.append(f"IMGID:img{index}\n" + "".join(f"{w}\t{t}\n" for w, t in zip(words, tags)))
        expected.append((f"img{index}", words, tags))
    data = tmp_path / "test.txt"
    data.write_text("\n".join(blocks), encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    evaluate_archive(run, data, predictions_output_file=out, batch_size=3)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(line["image_id"], line["words"], line["gold_tags"]) for line in lines] == expected
    first_lines = [1 + sum(len(e[1]) + 2 for e in expected[:index]) for index in range(len(expected))]
    for line, (_, words, _), first in zip(lines, expected, first_lines):
        assert len(line["tags"]) == len(words) and line["source"] == f"{data}:{first}"

