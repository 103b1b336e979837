"""Fine-tune a pretrained Mixer on a tfds dataset with the official fine-tune recipe, then export int8 TFLite.

    python examples/finetune.py --model mixer_b16 --weights imagenet --dataset cifar10 --steps 10000
    python examples/finetune.py --model mixer_s16 --weights '' --dataset digits --image-size 32 --steps 200 \
        --batch-size 64   # offline smoke run (no pretrained weights, small batches)

Interrupt it at any time and run the same command again: it resumes from runs/<name>/backup.
"""

import argparse

from keras_mixer.errors import KerasMixerError
from keras_mixer.export import to_tflite
from keras_mixer.training import train

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="mixer_b16")
parser.add_argument("--weights", default="imagenet", help="pretrained tag or checkpoint file ('' for none)")
parser.add_argument("--dataset", default="cifar10")
parser.add_argument("--image-size", type=int, default=224)
parser.add_argument("--steps", type=int, default=10_000)
parser.add_argument("--batch-size", type=int, default=512)
parser.add_argument("--strategy", default="auto")
args = parser.parse_args()

output = f"runs/{args.model}_{args.dataset}"
try:
    model, report = train(
        args.model, weights=args.weights or None, dataset=args.dataset, image_size=args.image_size,
        steps=args.steps, batch_size=args.batch_size, checkpoint_every=min(500, args.steps), recipe="finetune",
        strategy=args.strategy, download=True, output_dir=output,
    )
    print(f"eval top-1 {report['eval_top1']:.2%} after {report['steps']} steps")

    # int8 export calibrated on 256 training images, preprocessed exactly as evaluation preprocesses them
    to_tflite(model, f"{output}/model_int8.tflite", "int8", representative_data=args.dataset,
              labels=report.get("class_names"))
except KerasMixerError as error:  # a mistyped model, dataset or file: one line naming it, not a traceback
    parser.exit(2, f"{parser.prog}: error: {error}\n")
