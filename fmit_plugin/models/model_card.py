"""
A trained model's provenance, its training record, and the Markdown model card made of it: which
data (each file's SHA-256, counts and known version), which config as run (after variables and
overrides), which package versions and device, and the best validation scores.
"""
import json
from typing import Any, Optional

import torch

from fmit_plugin.common.run_environment import device_description, package_versions
from fmit_plugin.data.dataset_fingerprint import DatasetFingerprint, describe_known_version
from fmit_plugin.version import VERSION

# The splits of a training record, in the order the card shows them.
SPLITS = ("train", "validation", "test")


def training_record(
    config: dict[str, Any],
    datasets: dict[str, Optional[DatasetFingerprint]],
    device: torch.device,
) -> dict[str, Any]:
    """What `train` records in `training_record.json`, the archive's `meta.json` and `metrics.json`:
    `datasets` (split -> fingerprint, `None` for a split not configured), `config` (as run),
    `seed`, `packages` and `device`. Training adds `best_epoch` and `best_validation` when done."""
    return {
        "datasets": {split: None if fp is None else fp.to_json() for split, fp in datasets.items()},
        "config": config,
        "seed": config.get("trainer", {}).get("seed"),
        "packages": {**package_versions(), "fmit-plugin": VERSION},
        "device": device_description(device),
    }


def render_model_card(meta: dict[str, Any], name: str) -> str:
    """The model card of an archive (its `meta.json`) named `name`, in Markdown."""
    record = meta.get("training_record")
    lines = [f"# Model card: {name}", ""]
    if meta:
        lines += [f"- fmit-plugin {meta.get('fmit_plugin_version', '?')}, archive format "
                  f"{meta.get('archive_format', '?')}; weights SHA-256 `{meta.get('weights_sha256', '?')}`"]
        for namespace, labels in meta.get("labels", {}).items():
            lines.append(f"- {namespace} ({len(labels)}): {', '.join(labels)}")
    if not record:
        lines += ["", "No training record: this archive was written before fmit-plugin recorded one "
                  "(or not by `allennlp train`), so its data, config and environment are unknown."]
        return "\n".join(lines) + "\n"
    config = record.get("config", {})
    model = config.get("model", {})
    embedder = model.get("text_field_embedder", {})
    lines += [f"- model: `{model.get('type', '?')}`, text encoder `{embedder.get('model_name', '?')}`; "
              f"seed {record.get('seed')}"]
    if "best_validation" in record:
        best = record["best_validation"]
        lines.append(f"- best validation epoch {record.get('best_epoch')} (0-based): " + ", ".join(
            f"{key} {100 * best[key]:.2f}" for key in ("precision-overall", "recall-overall", "f1-measure-overall")
            if key in best))
    header = ["split", "file", "SHA-256", "bytes", "tweets", "tokens", "entities", "entities by type", "tags",
              "known version"]
    lines += ["", "## Data", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split in SPLITS:
        fingerprint = record.get("datasets", {}).get(split)
        if fingerprint is None:
            lines.append(f"| {split} | (none) |  |  |  |  |  |  |  |  |")
            continue
        by_type = ", ".join(f"{k} {v}" for k, v in fingerprint.get("entities_by_type", {}).items())
        tags = ", ".join(f"{k} {v}" for k, v in fingerprint.get("tags", {}).items())
        lines.append(
            f"| {split} | `{fingerprint['path']}` | `{fingerprint['sha256']}` | {fingerprint['bytes']} | "
            f"{_cell(fingerprint.get('tweets'))} | {_cell(fingerprint.get('tokens'))} | "
            f"{_cell(fingerprint.get('entities'))} | {by_type} | {tags} | "
            f"{describe_known_version(fingerprint.get('known_version'))} |"
        )
    lines += ["", "## Environment", "", "| package | version |", "|---|---|"]
    packages = record.get("packages", {})
    lines += [f"| {package} | {version or '(not installed)'} |" for package, version in packages.items()]
    lines += ["", "| device | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in record.get("device", {}).items()]
    lines += ["", "## Config as run", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _cell(value: Optional[int]) -> str:
    return "(not read)" if value is None else str(value)
