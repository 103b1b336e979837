"""Training on several devices: one script, the strategy chosen on the command line.

One machine, N GPUs (TensorFlow):   python examples/multi_gpu_and_tpu.py --strategy mirrored
TPU VM (TensorFlow):                python examples/multi_gpu_and_tpu.py --strategy tpu
N devices (JAX):                    KERAS_BACKEND=jax python examples/multi_gpu_and_tpu.py --strategy data_parallel

--precision auto (the default) picks bfloat16 on TPUs and on GPUs with bfloat16 tensor cores, float16 on older GPUs.

Several machines: Keras 3's `fit` does not yet run under tf.distribute.MultiWorkerMirroredStrategy
(keras-team/keras#20585; keras_mixer raises a clear error). Use the JAX backend: on every host run

    KERAS_BACKEND=jax python examples/multi_gpu_and_tpu.py --strategy data_parallel \\
        --coordinator 10.0.0.1:1234 --num-hosts 2 --host-index 0   # --host-index 1 on the other

connect_hosts (keras.distribution.initialize) joins the hosts; DataParallel then spans every device of every host. For the day
the TensorFlow path works, each machine would get TF_CONFIG like (index 0 on the first, 1 on the second):

    {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}
"""

import argparse

from keras_mixer.errors import KerasMixerError
from keras_mixer.training import connect_hosts, train

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="mixer_s16")
parser.add_argument("--dataset", default="imagenette")
parser.add_argument("--strategy", default="auto")
parser.add_argument("--precision", default="auto")
parser.add_argument("--tpu", help="TPU name for a TPU node / pod slice")
parser.add_argument("--coordinator", help="JAX multi-host: address of host 0")
parser.add_argument("--num-hosts", type=int, default=1)
parser.add_argument("--host-index", type=int, default=0)
parser.add_argument("--epochs", type=int, default=100)
args = parser.parse_args()

try:
    if args.coordinator:
        connect_hosts(args.coordinator, args.num_hosts, args.host_index)
    train(args.model, dataset=args.dataset, recipe="scratch", epochs=args.epochs, batch_size=1024,
          strategy=args.strategy, precision=args.precision, tpu=args.tpu, download=True,
          output_dir=f"runs/{args.model}_{args.dataset}")
except KerasMixerError as error:  # a mistyped flag, no TPU, a dataset offline: one line naming it, not a traceback
    parser.exit(2, f"{parser.prog}: error: {error}\n")
