"""
The offline demo (`make demo`): train BERT-CRF with the offline MiniLM on the small embedded tweet
set, evaluate it, tag a few new tweets, and print where everything is. Each step is the same as
the `allennlp` command it prints.
"""
import json
import os
import sys
from pathlib import Path

DEMO_DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    {"sentence": "Flying to Paris with Air France tomorrow !"},
    {"sentence": "RT @nba : Lionel Messi visits New York City"},
    {"tokens": ["Google", "opens", "an", "office", "in", "Berlin"]},
]


def main(output_dir: str = "runs/demo") -> None:
    from fmit_plugin.commands.evaluate import evaluate_archive
    from fmit_plugin.commands.predict import predict_file
    from fmit_plugin.commands.train import train_model_from_file
    from fmit_plugin.common.plugins import import_plugins

    config = REPO_ROOT / "training_configs" / "bert_crf_offline.jsonnet"
    if not config.is_file():
        sys.exit(f"The demo runs from a clone of the repository: {config} not found")
    import_plugins()
    os.environ.setdefault("DATA_DIR", str(DEMO_DATA))
    os.environ.setdefault("NUM_EPOCHS", "15")
    run = Path(output_dir)
    print(f"$ allennlp train {config.relative_to(REPO_ROOT)} -s {run} -f   (DATA_DIR={os.environ['DATA_DIR']})")
    train_model_from_file(config, run, force=True)
    archive = run / "model.tar.gz"
    test_file = Path(os.environ["DATA_DIR"]) / "test.txt"
    print(f"\n$ allennlp evaluate {archive} {test_file} --output-file {run / 'evaluation.json'}")
    evaluate_archive(archive, test_file, output_file=run / "evaluation.json")
    inputs = run / "examples.jsonl"
    inputs.write_text("".join(json.dumps(example) + "\n" for example in EXAMPLES), encoding="utf-8")
    print(f"\n$ allennlp predict {archive} {inputs} --output-file {run / 'predictions.jsonl'}")
    predict_file(archive, str(inputs), str(run / "predictions.jsonl"), silent=False)
    print(f"\nDone. Archive: {archive}\nMetrics: {run / 'metrics.json'}\nPredictions: {run / 'predictions.jsonl'}")
    print("The embedded set is tiny (a pipeline check, not an accuracy figure): see the README's results.")
