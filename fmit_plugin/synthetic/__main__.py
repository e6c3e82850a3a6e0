"""`python -m fmit_plugin.synthetic OUTPUT_DIR [--train N --valid N --test N --seed S --image-size W H --overwrite
--grounded-entities]`"""
import argparse
import json
import sys
import time
from typing import Optional, Sequence

from tango.common.exceptions import ConfigurationError

from fmit_plugin.synthetic.generator import (
    BLANK_IMAGE_RATE,
    DEFAULT_NUM_TWEETS,
    MISSING_IMAGE_RATE,
    DatasetExistsError,
    generate_dataset,
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmit_plugin.synthetic",
        description="Write a synthetic multi-modal NER dataset in which only the image decides an entity's type.",
    )
    parser.add_argument("output_dir", help="folder to create (must be absent or empty unless --overwrite)")
    for split, count in DEFAULT_NUM_TWEETS.items():
        parser.add_argument(f"--{split}", type=int, default=count, metavar="N", help=f"{split} tweets ({count})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(96, 96), metavar=("W", "H"), help="(96 96)")
    parser.add_argument(
        "--missing-image-rate", type=float, default=MISSING_IMAGE_RATE,
        help=f"tweets without image file ({MISSING_IMAGE_RATE})",
    )
    parser.add_argument(
        "--blank-image-rate", type=float, default=BLANK_IMAGE_RATE,
        help=f"tweets with a blank image ({BLANK_IMAGE_RATE})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT_DIR")
    parser.add_argument("--grounded-entities", action="store_true",
                        help="also write each entity's box (xml/<image_id>.xml, Pascal VOC) and proposals.jsonl")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = generate_dataset(
            args.output_dir,
            num_tweets={split: getattr(args, split) for split in DEFAULT_NUM_TWEETS},
            seed=args.seed,
            image_size=(args.image_size[0], args.image_size[1]),
            missing_image_rate=args.missing_image_rate,
            blank_image_rate=args.blank_image_rate,
            overwrite=args.overwrite,
            grounded_entities=args.grounded_entities,
        )
    # A bad argument value is a ConfigurationError, as in every other module (issue 14).
    except (DatasetExistsError, ConfigurationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary["seconds"] = round(time.perf_counter() - start, 3)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
