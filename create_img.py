"""Make the custom test images of chapter 6 in generated_images/ (or --out, or
$FMNIST_GENERATED_DIR), with labels.csv. The app offers them in its "Generated images" tab.

Two kinds: garments drawn from scratch for all ten classes (random colour, size, position,
rotation, background and texture), and real test images re-rendered as product photos, in one
or more styles: plain (a dark coloured item on a uniform light background, enlarged and
off-centre, as JPEG and PNG), studio (a shop's product photo: a gradient and vignetted backdrop,
a soft shadow, a tilt, coloured fabric, JPEG, several sizes) or cluttered (on wood planks, a
fabric, a bedsheet, tiles or a carpet, under uneven light). The same seed gives the same files,
byte for byte.

    python create_img.py                      # 5 drawings per class, 100 plain photos, seed 0
    python create_img.py --style studio --style cluttered --photos 500
    python create_img.py --per-class 20 --photos 1000 --seed 1 --out /tmp/images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmnist_lib.config import generated_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=5, help="drawings per class (5)")
    parser.add_argument("--photos", type=int, default=100, help="product photos (100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--style",
        action="append",
        choices=["plain", "studio", "cluttered"],
        help="product photo style, repeatable (plain)",
    )
    parser.add_argument(
        "--out", type=Path, default=generated_dir(), help="output folder (generated_images/)"
    )
    args = parser.parse_args(argv)
    if args.per_class < 0 or not 0 <= args.photos <= 10_000:
        parser.error("--per-class must be >= 0 and --photos between 0 and 10000")

    from fmnist_lib import custom_images
    from fmnist_lib.acquisition import DatasetError
    from fmnist_lib.data import load_fashion_mnist

    try:
        data = load_fashion_mnist()
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        images = custom_images.generate(
            args.out,
            data.x_test,
            data.y_test,
            args.per_class,
            args.photos,
            args.seed,
            styles=tuple(dict.fromkeys(args.style or ["plain"])),
        )
    except OSError as err:
        print(f"error: cannot write to {args.out}: {err.strerror}", file=sys.stderr)
        return 1
    drawn = sum(image.kind == "drawn" for image in images)
    styles = ", ".join(dict.fromkeys(image.style for image in images if image.style))
    print(
        f"{drawn} drawings and {len(images) - drawn} photos ({styles or 'none'}) in {args.out}/ "
        f"(seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
