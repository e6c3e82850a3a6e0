"""`python -m fmit_plugin.demo [OUTPUT_DIR]` (default runs/demo): see `fmit_plugin.demo`."""
import argparse
import logging

from fmit_plugin.demo import __doc__ as description
from fmit_plugin.demo import main

parser = argparse.ArgumentParser(prog="python -m fmit_plugin.demo", description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("output_dir", nargs="?", default="runs/demo",
                    help="serialization directory of the demo model (default runs/demo); the feature store goes "
                         "beside it")
args = parser.parse_args()
logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
for _noisy in ("transformers", "huggingface_hub"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
main(args.output_dir)
