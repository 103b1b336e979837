"""Which normalization layers feed a linear layer directly, declared by each block for channel equalization.

A block's `channel_equalization()` returns `{norm attribute: the linear layers it feeds}` (attribute paths such as
"channel_mixing.dense_0") where nothing but the norm's per-channel affine stands between the normalized statistics
and those layers' input rows: a per-channel scale s then moves exactly from the norm (scale and bias / s) into the
linear layers (input rows * s), which `keras_mixer.export.equalize_channels` uses to shrink int8 activation ranges.
A norm whose output cannot take that move maps to the reason instead, which the equalization report shows.
"""

TOKEN_MIXING = ("feeds token mixing: its channels become rows of the token matmul, and a per-row scale does not "
                "fold into the weight all rows share")
REGROUPED = ("feeds branches that regroup its channels with spatial positions (a channel's scale would have to "
             "fold into weights shared by other channels)")
NONLINEAR = "a nonlinearity (GELU, ReLU) stands between it and the next linear layer"
EXPERTS = "feeds a mixture of experts, whose router and experts int8 exports keep float"
