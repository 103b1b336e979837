"""The `keras-mixer` command line."""

import argparse
import sys

from keras_mixer.errors import KerasMixerError


def _demo(args):
    from keras_mixer.demo import run_demo

    # A live progress bar on a terminal; one line per epoch in logs (CI), where a redrawn bar is noise.
    verbose = 1 if sys.stdout.isatty() else 2
    run_demo(args.output, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, verbose=verbose)


def _convert(args):
    from keras_mixer.models.mlp_mixer import convert_checkpoint

    model = convert_checkpoint(args.input, args.output, gelu=args.gelu)
    print(f"\nwrote {args.output}: {model.name}, {model.count_params():,} params, input {model.input_shape[1:]}")


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-mixer", description="MLP-Mixer models for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a small Mixer on the offline digits dataset and report")
    demo.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    convert = commands.add_parser(
        "convert", help="convert an official .npz or timm .pth/.safetensors Mixer checkpoint to .keras/.weights.h5"
    )
    convert.add_argument("input", help="checkpoint file (.npz, .pth, .bin, .safetensors)")
    convert.add_argument("output", help="output file (.keras or .weights.h5)")
    convert.add_argument(
        "--gelu", choices=["tanh", "exact"], help="GELU form (default: tanh for official .npz, exact for timm files)"
    )
    convert.set_defaults(run=_convert)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KerasMixerError as error:
        print(f"keras-mixer {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
