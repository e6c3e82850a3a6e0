"""
The README's first command from a fresh clone: clone this repository's HEAD into a temporary folder,
run the two steps of `make demo` there (`make install-test`, then `python -m fmit_plugin.demo`) in a
new `./.venv` of the clone, time each, and read the demo's test F1 from the `runs/demo/evaluation.json`
it writes. Writes `benchmarks/results/demo.json` (command, machine, commit, seconds, F1, the files in
`runs/demo/`) and publishes the README's "demo" table (what to expect from `make demo`).

    python benchmarks/fresh_clone.py

The clone installs with pip as a user's would (from the package index, or pip's cache). Commit first:
only committed files are cloned. Not a test: it takes minutes.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).parent))
from readme_tables import markdown_table, publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = Path("runs") / "demo"
COMMAND = "make demo"
SOURCE = "benchmarks/fresh_clone.py"
MACHINE = ("import json, sys; sys.path.insert(0, 'benchmarks'); from accuracy import machine; "
           "print(json.dumps(machine()))")


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell in the fresh clone: no active virtualenv or conda env, so the
    Makefile makes the clone's own `./.venv`."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(venv))
    return env


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    print("$ " + " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, cwd=cwd, env=env, check=True)
    return time.time() - started


def _files(run: Path) -> list[str]:
    """The entries of the demo's output folder, folders with a trailing slash."""
    return sorted(entry.name + ("/" if entry.is_dir() else "") for entry in run.iterdir())


def measure(clone: Path) -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", commit], check=True)
    env = _clean_env()
    # The two steps of `make demo` (its recipe is `$(PYTHON) -m fmit_plugin.demo` after `install-test`),
    # run apart so that installing and the demo are timed apart.
    install = _timed(["make", "install-test"], clone, env)
    python = str(clone / ".venv" / "bin" / "python")
    demo_env = {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    demo = _timed([python, "-m", "fmit_plugin.demo"], clone, demo_env)
    run = clone / DEMO_RUN
    evaluation = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
    machine = json.loads(subprocess.run([python, "-c", MACHINE], cwd=clone, env=demo_env, check=True,
                                        capture_output=True, text=True).stdout)
    return {
        "command": COMMAND,
        "steps": ["make install-test", "python -m fmit_plugin.demo"],
        "machine": machine,
        "commit": commit[:7],
        "seconds": {"total": round(install + demo, 1), "install": round(install, 1), "demo": round(demo, 1)},
        "test_f1": evaluation["f1-measure-overall"],
        "test": evaluation,
        "files": _files(run),
        "source": SOURCE,
    }


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def table(result: dict[str, Any]) -> str:
    """The README's "what to expect" table of one results file."""
    seconds = result["seconds"]
    machine = result["machine"]
    where = f"{machine['cpu_count']} CPU cores" + (f", {machine['cuda']}" if machine.get("cuda") else "")
    rows: list[list[object]] = [
        ["time", f"{_minutes(seconds['total'])} in all, {'about ' if seconds.get('install_approximate') else ''}"
                 f"{_minutes(seconds['install'])} of it installing"],
        ["test F1 (synthetic tweets)", f"{100 * result['test_f1']:.1f}"],
    ]
    if result.get("files"):
        rows.append([f"in `{DEMO_RUN}/`", ", ".join(f"`{name}`" for name in result["files"])])
    caption = (f"`{result['command']}` from a fresh clone at commit `{result['commit']}` on {where}"
               + (f" (source: {result['source']})" if result.get("source", SOURCE) != SOURCE else "") + ":\n\n")
    return caption + markdown_table(["", "measured"], rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "demo.json"))
    parser.add_argument("--keep", help="clone into this (new) folder and keep it, instead of a temporary one")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README's demo table")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fmit_fresh_clone_"))
    try:
        result = measure(work / "fmit-plugin" if not args.keep else work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        publish("demo", table(result))
    print(table(result))


if __name__ == "__main__":
    main()
