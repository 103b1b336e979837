"""`python -m keras_mixer_cli`: the same as the `keras-mixer` command."""

import sys

from keras_mixer_cli import main

sys.exit(main())
