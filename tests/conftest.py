import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# timm imports torchvision, whose native ops crash the process when loaded after TensorFlow (seen with
# tensorflow-cpu 2.21 + torchvision 0.29.1); loading the reference first avoids it. keras_mixer itself only ever
# imports torch (to read .pth files), which is safe in either order.
import timm  # noqa: E402,F401
